#!/usr/bin/env python3
"""The floor of one pytest session per test module: what fine segments cost with no checkdef
at all (no sandbox, no cache, no supervisor), so that the warm runner's cost can be split into
pytest's own per-session work and checkdef's.

usage: session-floor.py REPO [--jobs N] [--verbose]

Imports pytest and its default plugins once (as the warm server does), freezes the heap, then
forks one child per test module named by `tests = [...]` in REPO's checkdef.toml, biggest file
first, at most N at a time (default 2, checkdef's default on two CPUs); each child runs
`pytest -q -p no:cacheprovider MODULE` in REPO with REPO first on sys.path, its output thrown
away, and ends with the interpreter's finalisation (as a fresh session does). Exits 1 if any
session fails. With --verbose, prints each module's CPU time (user +
system) and the total to stderr. Used by warm.sh as the `floor` command.
"""
import argparse
import gc
import importlib
import os
import resource
import sys
import tomllib


def modules(repo):
    with open(os.path.join(repo, "checkdef.toml"), "rb") as f:
        config = tomllib.load(f)
    out = []
    for seg in config.get("segment", []):
        out.extend(seg.get("tests", []))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    repo = os.path.realpath(args.repo)
    # Biggest first, a stand-in for checkdef's longest-expected-first order.
    todo = sorted(modules(repo), key=lambda m: -os.path.getsize(os.path.join(repo, m)))
    if not todo:
        sys.exit("no `tests = [...]` segments in %s/checkdef.toml" % repo)
    import pytest  # noqa: F401  (once, in the parent: the point of a fork server)
    from _pytest.config import default_plugins

    for name in default_plugins:
        importlib.import_module("_pytest." + name)
    os.chdir(repo)
    sys.path.insert(0, repo)
    gc.freeze()
    running = {}
    failed = []
    total = 0.0

    def reap():
        nonlocal total
        pid, status, usage = os.wait4(-1, 0)
        module = running.pop(pid)
        cpu = usage.ru_utime + usage.ru_stime
        total += cpu
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(module)
        if args.verbose:
            print("%-60s %7.1f ms" % (module, cpu * 1000), file=sys.stderr)

    for module in todo:
        while len(running) >= args.jobs:
            reap()
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            code = pytest.main(["-q", "-p", "no:cacheprovider", module])
            # The interpreter's own end (atexit, flush, module teardown), as a fresh session
            # and checkdef's warm child have it: a crash there is the session's.
            sys.exit(int(code))
        running[pid] = module
    while running:
        reap()
    own = resource.getrusage(resource.RUSAGE_SELF)
    if args.verbose:
        print(
            "%d sessions: %.0f ms CPU in the children, %.0f ms in the parent"
            % (len(todo), total * 1000, (own.ru_utime + own.ru_stime) * 1000),
            file=sys.stderr,
        )
    if failed:
        sys.exit("failed: " + ", ".join(failed))


if __name__ == "__main__":
    main()
