#!/usr/bin/env python3
"""Pushes SWE-bench-shaped images for scripts/bench straight through the registry API (stdlib
only, plain HTTP, loopback registries only): fast, no daemon.

Every image has the same --shared layers (made once, from a fixed seed) plus one small layer
of its own (its instance id and --own-kb random bytes); layers are valid gzipped tars and the
config's diff_ids match, so `docker pull` takes them. Each blob is uploaded once per registry
and mounted into the other repositories.

  bench-images.py --registry 127.0.0.1:5000 --shared-kb 65536,32768,... --own-kb 4 \\
      --refs refs.txt [--payload [--payload-seed N]]

refs.txt: one `INSTANCE REPOSITORY:TAG [REPOSITORY:TAG...]` a line; every reference of a line
gets the same image. --payload instead pushes one image of the --shared layers only (the
builder's payload) under each reference on the lines (the instance column is ignored).
"""
import argparse
import gzip
import hashlib
import http.client
import io
import json
import random
import re
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def layer(files):
    """A gzipped tar of {path: bytes}: (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    # Random bytes do not compress: level 1 keeps making them fast.
    blob = gzip.compress(tar, compresslevel=1, mtime=0)
    return blob, "sha256:" + hashlib.sha256(tar).hexdigest()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Client:
    def __init__(self, registry):
        self.host, port = registry.rsplit(":", 1)
        self.port = int(port)
        self.local = threading.local()
        self.present = set()  # (repo, digest)
        self.lock = threading.Lock()
        self.uploaded = {}  # digest -> repo that has it

    def req(self, method, path, body=None, headers=None):
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.headers, data
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise

    def blob(self, repo, data, digest):
        if (repo, digest) in self.present:
            return
        st, _, _ = self.req("HEAD", f"/v2/{repo}/blobs/{digest}")
        if st == 200:
            self.present.add((repo, digest))
            return
        src = self.uploaded.get(digest)
        if src:
            st, _, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={src}", b"",
                                {"Content-Length": "0"})
            if st == 201:
                self.present.add((repo, digest))
                return
        st, h, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
        if st != 202:
            sys.exit(f"bench-images: starting an upload to {repo}: HTTP {st}")
        loc = h["Location"]
        loc = re.sub(r"^https?://[^/]+", "", loc)
        loc += ("&" if "?" in loc else "?") + f"digest={digest}"
        st, _, body = self.req("PUT", loc, data, {"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(len(data))})
        if st != 201:
            sys.exit(f"bench-images: uploading {digest} to {repo}: HTTP {st} {body[:200]!r}")
        with self.lock:
            self.present.add((repo, digest))
            self.uploaded.setdefault(digest, repo)

    def manifest(self, repo, tag, data):
        st, _, body = self.req("PUT", f"/v2/{repo}/manifests/{tag}", data,
                               {"Content-Type": MANIFEST, "Content-Length": str(len(data))})
        if st != 201:
            sys.exit(f"bench-images: writing {repo}:{tag}: HTTP {st} {body[:300]!r}")


def image(layers, history_note):
    """(config bytes, manifest bytes) for [(blob, diff_id)]."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/testbed"},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        "history": [{"created_by": f"{history_note} layer {i}"} for i in range(len(layers))],
    }
    cfg = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "size": len(cfg), "digest": sha(cfg)},
        "layers": [{"mediaType": LAYER, "size": len(b), "digest": sha(b)} for b, _ in layers],
    }
    return cfg, json.dumps(manifest, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--shared-kb", default="64,64,64,64,64,64,64,64,64", help="comma-separated sizes of the shared layers")
    ap.add_argument("--own-kb", type=int, default=4)
    ap.add_argument("--refs", required=True)
    ap.add_argument("--payload", action="store_true")
    ap.add_argument("--payload-seed", type=int, default=4242, help="another seed: another payload (a new builder version)")
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    if not re.match(r"^(127\.\d+\.\d+\.\d+|localhost):\d+$", a.registry):
        sys.exit("bench-images: the registry must be a loopback HOST:PORT")
    rng = random.Random(1776 if not a.payload else a.payload_seed)
    shared = []
    for i, kb in enumerate(int(x) for x in a.shared_kb.split(",") if x):
        shared.append(layer({f"shared/{i}.bin": rng.randbytes(kb * 1024)}))
    lines = [l.split() for l in open(a.refs) if l.strip()]
    c = Client(a.registry)

    def push_one(line):
        inst, refs = line[0], line[1:]
        if a.payload:
            layers = shared
        else:
            own = layer({"instance.txt": inst.encode() + b"\n",
                         "own.bin": random.Random(inst).randbytes(a.own_kb * 1024)})
            layers = shared + [own]
        cfg, man = image(layers, "payload" if a.payload else inst)
        for ref in refs:
            repo, tag = ref.rsplit(":", 1)
            for b, _ in layers:
                c.blob(repo, b, sha(b))
            c.blob(repo, cfg, sha(cfg))
            c.manifest(repo, tag, man)

    # The shared blobs go up once, before the fan-out, so the others mount them.
    if lines:
        push_one(lines[0])
    with ThreadPoolExecutor(a.threads) as pool:
        list(pool.map(push_one, lines[1:]))
    total = sum(len(b) for b, _ in shared)
    print(f"pushed {len(lines)} image(s) x {len(lines[0]) - 1 if lines else 0} reference(s): "
          f"{len(shared)} shared layers ({total / 1048576:.1f} MB)" + ("" if a.payload else f" + 1 own layer (~{a.own_kb} KB)"),
          file=sys.stderr)


if __name__ == "__main__":
    main()
