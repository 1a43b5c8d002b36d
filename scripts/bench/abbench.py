#!/usr/bin/env python3
"""Time shell commands against each other: same directory, same invocation, interleaved.

usage: abbench.py [--runs N] [--warmup W] [--cwd DIR] [--baseline NAME] [--group ID]
                  [--json FILE] [--prepare NAME=CMD]... [--env NAME=VAR=VALUE]...
                  NAME=CMD [NAME=CMD ...]

Each round runs every command once; the order alternates between rounds (A B, then B A, ...)
so that a slow drift of the machine (other jobs, thermal, page cache) hits all commands alike.
A command's optional prepare step (`--prepare NAME=CMD`) runs before each of its runs and is
not timed. Commands run with `sh -c` (stdout and stderr to /dev/null) and must exit 0.

Prints, per command: median, min-max, the ratio of its median to the baseline's (the first
command unless --baseline), and the peak RSS of the `sh -c` child tree's largest process
(wait4 ru_maxrss; it is the command's own when sh execs it, which sh does for a simple
command), and the median CPU time (user + system) of the command's process tree, which says
more than wall time on a shared machine. --json appends one JSON object per command to FILE (for report.py).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_once(cmd, cwd, env):
    devnull = subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen(["/bin/sh", "-c", cmd], cwd=cwd, env=env, stdin=devnull,
                         stdout=devnull, stderr=devnull)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    # CPU time (user + system) of the child and of every descendant it waited for (Linux's
    # wait4 reports both): on a shared machine it says what the command costs when wall time
    # is inflated by other jobs.
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, p.returncode, usage.ru_maxrss, cpu  # KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cwd", default=".")
    ap.add_argument("--baseline")
    ap.add_argument("--group", default="")
    ap.add_argument("--json")
    ap.add_argument("--prepare", action="append", default=[])
    ap.add_argument("--env", action="append", default=[], help="NAME=VAR=VALUE: extra variable for one command")
    ap.add_argument("commands", nargs="+", metavar="NAME=CMD")
    a = ap.parse_args()
    if a.runs < 5:
        sys.exit("--runs must be at least 5")

    cmds, prep, envs = {}, {}, {}
    for spec in a.commands:
        name, sep, cmd = spec.partition("=")
        if not sep or not name:
            sys.exit(f"bad command {spec!r}: expected NAME=CMD")
        cmds[name] = cmd
    for spec in a.prepare:
        name, _, cmd = spec.partition("=")
        if name not in cmds:
            sys.exit(f"--prepare for unknown command {name!r}")
        prep[name] = cmd
    for spec in a.env:
        name, _, kv = spec.partition("=")
        var, _, value = kv.partition("=")
        if name not in cmds or not var:
            sys.exit(f"bad --env {spec!r}")
        envs.setdefault(name, {})[var] = value
    baseline = a.baseline or next(iter(cmds))
    if baseline not in cmds:
        sys.exit(f"unknown baseline {baseline!r}")

    def env_for(name):
        e = dict(os.environ)
        e.update(envs.get(name, {}))
        return e

    def one(name):
        if name in prep:
            subprocess.run(["/bin/sh", "-c", prep[name]], cwd=a.cwd, env=env_for(name), check=True,
                           stdout=subprocess.DEVNULL)
        t, code, rss, cpu = run_once(cmds[name], a.cwd, env_for(name))
        if code != 0:
            sys.exit(f"{name}: `{cmds[name]}` exited with {code}")
        return t, rss, cpu

    names = list(cmds)
    for _ in range(a.warmup):
        for n in names:
            one(n)
    times = {n: [] for n in names}
    rss = {n: [] for n in names}
    cpus = {n: [] for n in names}
    load = os.getloadavg()[0]
    for r in range(a.runs):
        for n in (names if r % 2 == 0 else names[::-1]):
            t, m, c = one(n)
            times[n].append(t)
            rss[n].append(m)
            cpus[n].append(c)
    load = (load + os.getloadavg()[0]) / 2

    base = statistics.median(times[baseline])
    width = max(len(n) for n in names)
    base_cpu = statistics.median(cpus[baseline])
    head = (f"{'':{width}}  {'median':>9}  {'min–max':>17}  {'ratio':>6}  {'CPU':>9}  {'ratio':>6}  "
            f"{'peak RSS':>9}")
    print(f"# {a.group} ({a.runs} runs each, alternating; ratio = median / median of {baseline}; "
          f"load average {load:.1f})" if a.group
          else f"# {a.runs} runs each, alternating; ratio = median / median of {baseline}; "
               f"load average {load:.1f}")
    print(head)
    for n in names:
        t = times[n]
        med = statistics.median(t)
        cpu = statistics.median(cpus[n])
        line = (f"{n:{width}}  {fmt(med):>9}  {fmt(min(t)) + '–' + fmt(max(t)):>17}  "
                f"{med / base:>5.2f}×  {fmt(cpu):>9}  {cpu / base_cpu if base_cpu else 0:>5.2f}×  "
                f"{max(rss[n]) / 1024:>6.1f} MiB")
        print(line)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"group": a.group, "name": n, "command": cmds[n], "prepare": prep.get(n),
                                    "cwd": os.path.abspath(a.cwd), "runs": a.runs, "times_s": t,
                                    "median_s": med, "min_s": min(t), "max_s": max(t),
                                    "baseline": baseline, "ratio": med / base,
                                    "maxrss_kib": max(rss[n]), "cpu_s": cpus[n],
                                    "median_cpu_s": cpu, "loadavg": load}) + "\n")
    sys.stdout.flush()


def fmt(s):
    if s < 0.1:
        return f"{s * 1000:.1f} ms"
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


if __name__ == "__main__":
    main()
