#!/usr/bin/env python3
"""Reads split-build plans for scripts/bench (stdlib only).

  bench-plan.py matrix PLAN          the agents matrix: `SHARD<TAB>ITEMS` a line
  bench-plan.py bases PLAN [PLAN...] `INSTANCE REPOSITORY:TAG...` a line: every base tag the
                                     plans name for the instance, without the registry host
"""
import json
import sys


def main():
    cmd, plans = sys.argv[1], sys.argv[2:]
    if cmd == "matrix":
        for e in json.load(open(plans[0]))["matrices"]["agents"]["include"]:
            print(f"{e['shard']}\t{e['items']}")
    elif cmd == "bases":
        refs = {}
        for p in plans:
            for b in json.load(open(p))["bases"]:
                ref = b["image"].split("/", 1)[1]
                refs.setdefault(b["instance"], [])
                if ref not in refs[b["instance"]]:
                    refs[b["instance"]].append(ref)
        for inst, rs in refs.items():
            print(inst, *rs)
    else:
        sys.exit(f"bench-plan: unknown command {cmd}")


if __name__ == "__main__":
    main()
