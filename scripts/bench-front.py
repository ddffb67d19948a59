#!/usr/bin/env python3
"""A registry front for scripts/bench (stdlib only, loopback only).

An HTTP/1.1 proxy in front of one registry that counts every request it passes (method and
kind: manifest, blob, mount, upload start, upload PUT, ...) and, with --writes-per-second N,
allows at most N writes (POST, PUT, PATCH, DELETE) a second: a token bucket holding one
second's worth; a write beyond it is answered 429 with `Retry-After: 1` and never reaches the
registry (as GHCR does past its 2,000 writes a minute, scaled down).

  bench-front.py --upstream 127.0.0.1:5000 [--writes-per-second 50] [--max-seconds 1800]

Prints the port it listens on (127.0.0.1, a free port) on its first line. The Host header
is passed unchanged, so the registry's upload Locations name the front.
  GET  /__front/stats   counters as JSON (not counted)
  POST /__front/reset   zero the counters
It exits by itself after --max-seconds.
"""
import argparse
import asyncio
import json
import re
import signal
import sys
import time

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def kind(method, target):
    path, _, query = target.partition("?")
    if path in ("/v2", "/v2/"):
        return "ping"
    if "/manifests/" in path:
        return "manifest"
    if "/blobs/uploads" in path:
        if method == "POST":
            if "mount=" in query:
                return "mount"
            if "digest=" in query:
                return "upload monolithic"
            return "upload start"
        if method == "PUT":
            return "upload finish"
        if method == "PATCH":
            return "upload chunk"
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if path.endswith("/tags/list"):
        return "tags"
    return "other"


class Stats:
    def __init__(self):
        self.reset()

    def reset(self):
        self.requests = 0
        self.writes = 0
        self.refused = 0  # 429s answered by the front
        self.by_kind = {}
        self.by_status = {}
        self.first = None
        self.last = None

    def as_json(self):
        return {
            "requests": self.requests,
            "writes": self.writes,
            "refused_429": self.refused,
            "passed": self.requests - self.refused,
            "writes_passed": self.writes - self.refused,
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_status": dict(sorted(self.by_status.items())),
            "first_to_last_s": (self.last - self.first) if self.first else 0.0,
        }


class Bucket:
    """A token bucket of `rate` a second holding at most one second's worth."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = self.rate
        self.at = time.monotonic()

    def take(self):
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return first, headers


def get(headers, name):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def read_body(reader, headers, until_eof=False):
    te = (get(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers until an empty line
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return b"".join(parts)
    length = get(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if until_eof:
        return await reader.read()
    return b""


def render(first, headers, body):
    out = [first]
    for k, v in headers:
        if k.lower() in ("transfer-encoding", "content-length"):
            continue
        out.append(f"{k}: {v}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body


class Front:
    def __init__(self, upstream, rate):
        self.host, port = upstream.rsplit(":", 1)
        self.port = int(port)
        self.stats = Stats()
        self.bucket = Bucket(rate)

    async def handle(self, reader, writer):
        up = None
        try:
            while True:
                try:
                    first, headers = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target, _version = first.split(" ", 2)
                body = await read_body(reader, headers)
                if target.startswith("/__front/"):
                    if target.startswith("/__front/reset"):
                        self.stats.reset()
                    payload = json.dumps(self.stats.as_json()).encode()
                    writer.write(render("HTTP/1.1 200 OK", [("Content-Type", "application/json")], payload))
                    await writer.drain()
                    continue
                s = self.stats
                now = time.monotonic()
                s.first = s.first or now
                s.last = now
                s.requests += 1
                k = f"{method} {kind(method, target)}"
                s.by_kind[k] = s.by_kind.get(k, 0) + 1
                if method in WRITES:
                    s.writes += 1
                    if not self.bucket.take():
                        s.refused += 1
                        s.by_status["429"] = s.by_status.get("429", 0) + 1
                        msg = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"too many writes (bench front)"}]}'
                        writer.write(render("HTTP/1.1 429 Too Many Requests",
                                            [("Content-Type", "application/json"), ("Retry-After", "1")], msg))
                        await writer.drain()
                        continue
                for attempt in range(2):
                    try:
                        if up is None:
                            up = await asyncio.open_connection(self.host, self.port)
                        up[1].write(render(first, headers, body))
                        await up[1].drain()
                        rfirst, rheaders = await read_head(up[0])
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # a kept-alive connection the registry closed: open a new one once
                        if up:
                            up[1].close()
                        up = None
                        if attempt:
                            raise
                status = int(rfirst.split(" ", 2)[1])
                s.by_status[str(status)] = s.by_status.get(str(status), 0) + 1
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                close = (get(rheaders, "connection") or "").lower() == "close"
                if no_body:
                    rbody = b""
                    out = [rfirst] + [f"{k}: {v}" for k, v in rheaders]
                    writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                else:
                    eof = get(rheaders, "content-length") is None and "chunked" not in (get(rheaders, "transfer-encoding") or "")
                    rbody = await read_body(up[0], rheaders, until_eof=eof)
                    close = close or eof
                    writer.write(render(rfirst, rheaders, rbody))
                await writer.drain()
                if close:
                    up[1].close()
                    up = None
                if (get(headers, "connection") or "").lower() == "close":
                    return
        except Exception as e:  # one connection's trouble ends that connection only
            print(f"bench-front: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            if up:
                up[1].close()
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the registry (loopback)")
    ap.add_argument("--writes-per-second", type=float, default=0, help="0: no limit, count only")
    ap.add_argument("--max-seconds", type=float, default=1800)
    a = ap.parse_args()
    if not re.match(r"^(127\.\d+\.\d+\.\d+|localhost):\d+$", a.upstream):
        sys.exit("bench-front: the upstream must be a loopback HOST:PORT")
    front = Front(a.upstream, a.writes_per_second)
    server = await asyncio.start_server(front.handle, "127.0.0.1", 0, limit=1 << 20, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), a.max_seconds)
    except asyncio.TimeoutError:
        print("bench-front: --max-seconds reached, exiting", file=sys.stderr)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
