#!/usr/bin/env python3
"""Render the JSON lines of compare.sh / abbench.py as Markdown tables.

usage: report.py RESULTS.jsonl [MACHINE.txt]

One table per group (the last measurement of each command in a group wins), with median,
min–max, the ratio to the group's baseline and peak RSS; then the machine facts, verbatim.
"""
import json
import sys


def ms(s):
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 0.1:
        return f"{s * 1000:.0f} ms"
    return f"{s * 1000:.1f} ms"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip())
    groups = {}
    for line in open(sys.argv[1]):
        line = line.strip()
        if line:
            r = json.loads(line)
            groups.setdefault(r["group"], {})[r["name"]] = r
    for group, rows in groups.items():
        print(f"**{group}**\n")
        if all("median_s" not in r for r in rows.values()):
            print("| command | peak RSS |\n|---|---:|")
            for name, r in rows.items():
                print(f"| `{name}` | {r['maxrss_kib'] / 1024:.1f} MiB |")
            print()
            continue
        runs = {r["runs"] for r in rows.values()}
        base = next(iter(rows.values()))["baseline"]
        print(f"| command | median | min–max | × {base} | peak RSS |\n|---|---:|---:|---:|---:|")
        for name, r in rows.items():
            print(f"| `{name}` | {ms(r['median_s'])} | {ms(r['min_s'])}–{ms(r['max_s'])} | "
                  f"{r['ratio']:.2f} | {r['maxrss_kib'] / 1024:.0f} MiB |")
        print(f"\n{'/'.join(map(str, sorted(runs)))} runs each, interleaved.\n")
    if len(sys.argv) == 3:
        print("Machine:\n\n```")
        print(open(sys.argv[2]).read().rstrip())
        print("```")


if __name__ == "__main__":
    main()
