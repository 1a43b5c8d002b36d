#!/usr/bin/env bash
# Generate a synthetic Python repository for the benchmarks.
#
# usage: scripts/bench/make-repo.sh DIR NFILES NSEGMENTS
#
# NFILES small, distinct Python modules in NSEGMENTS packages src/pkgNNNN/ (at most 100 modules
# per directory: src/pkgNNNN/subNNN/modNNNNN.py), one fast pytest test per package
# (tests/test_pkgNNNN.py, counted in NFILES), pytest.ini, .gitignore and a checkdef.toml with one
# segment per package (`src/pkgNNNN/**` + its test + pytest.ini). Two commits, written with
# `git fast-import` (100,000 files take seconds): the tree, then a one-line change to
# src/pkg0000/__init__.py; then packed (`git gc`) and checked out, so the work tree is clean.
# Commit ids are deterministic.
#
# COMMAND=CMD gives every segment the shell command CMD instead of its pytest run (e.g. `true`
# for a stress repository whose cold run should not start thousands of Python processes).
#
# LOOSE=1 leaves the last commit's trees and commits as loose objects (the blobs packed), as a
# repository holds its newest trees between two `git gc` runs.
#
# HISTORY=N (default 0) inserts N commits before the last one, each changing 10 modules spread
# over the packages, so that `git gc` stores most trees as deltas, as in a repository with a
# real history.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 DIR NFILES NSEGMENTS   (e.g. $0 /tmp/r100k 100000 100)" >&2; exit 2; }
[ $# -eq 3 ] || usage
DIR=$1 NFILES=$2 NSEG=$3
[[ $NFILES =~ ^[0-9]+$ && $NSEG =~ ^[0-9]+$ ]] || usage
[ "$NSEG" -ge 1 ] && [ "$NFILES" -ge $((2 * NSEG)) ] || die "need NFILES >= 2 * NSEGMENTS >= 2"
[ "$NSEG" -le 10000 ] || die "at most 10000 segments"

ensure_git
ensure_python
hermetic_git
prepare_target_dir "$DIR"
git init -q -b main "$DIR"

log "generating $NFILES files in $NSEG segments in $DIR"
python3 - "$NFILES" "$NSEG" "${HISTORY:-0}" "${COMMAND:-}" <<'PY' | git -C "$DIR" fast-import --quiet --done
import json, sys
nfiles, nseg, history, command = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = sys.stdout.buffer
w = out.write

def data(b):
    w(b"data %d\n" % len(b)); w(b); w(b"\n")

def file(path, content):
    w(b"M 100644 inline " + path.encode() + b"\n"); data(content)

def commit(msg, when):
    w(b"commit refs/heads/main\n")
    w(b"author checkdef-bench <bench@example.invalid> %d +0000\n" % when)
    w(b"committer checkdef-bench <bench@example.invalid> %d +0000\n" % when)
    data(msg.encode())

def init_py(pkg, extra=b""):
    return (f'"""Synthetic package {pkg}."""\n\nNAME = "{pkg}"\n\n\ndef ident(x):\n    return x\n'
            .encode() + extra)

config = ["# One test segment per synthetic package (scripts/bench/make-repo.sh).\n"
          "version = 1\n\n[defaults]\ninclude = [\"pytest.ini\"]\n"]
for s in range(nseg):
    pkg = f"pkg{s:04d}"
    config.append(f'\n[[segment]]\nname = "{pkg}-tests"\n'
                  f'include = ["src/{pkg}/**", "tests/test_{pkg}.py"]\n'
                  f'command = {json.dumps(command or f"python3 -m pytest -q -p no:cacheprovider tests/test_{pkg}.py")}\n')

commit(f"synthetic repository: {nfiles} files in {nseg} packages\n", 1704067200)
file("checkdef.toml", "".join(config).encode())
file("pytest.ini", b"[pytest]\npythonpath = src\ntestpaths = tests\n")
file(".gitignore", b"__pycache__/\n.pytest_cache/\n.turbo/\nnode_modules/\nresult\n")
# Files per package, tests included; nfiles - 3 for the three root files above.
per, extra = divmod(nfiles - 3, nseg)
for s in range(nseg):
    pkg = f"pkg{s:04d}"
    n = per + (1 if s < extra else 0) - 2  # minus __init__.py and the test
    file(f"tests/test_{pkg}.py",
         f"import {pkg}\n\n\ndef test_{pkg}():\n    assert {pkg}.NAME == \"{pkg}\"\n"
         f"    assert {pkg}.ident(3) == 3\n".encode())
    file(f"src/{pkg}/__init__.py", init_py(pkg))
    for i in range(n):
        file(f"src/{pkg}/sub{i // 100:03d}/mod{i:05d}.py",
             f"VALUE = {i}\n\n\ndef f_{s}_{i}(x):\n    return x + {i} + {s}\n".encode())
w(b"\n")
n_mods = per - 2
for h in range(history):
    commit(f"history {h}\n", 1704067200 + h + 1)
    for k in range(10):
        s = (h * 7919 + k * 104729) % nseg
        i = (h * 31 + k * 17) % n_mods
        file(f"src/pkg{s:04d}/sub{i // 100:03d}/mod{i:05d}.py",
             f"VALUE = {i}\n\n\ndef f_{s}_{i}(x):\n    return x + {i} + {s} + {h}\n".encode())
    w(b"\n")
commit("pkg0000: add double()\n", 1704067200 + history + 60)
file("src/pkg0000/__init__.py", init_py("pkg0000", b"\n\ndef double(x):\n    return 2 * x\n"))
w(b"\ndone\n")
PY
git -C "$DIR" gc -q
if [ -n "${LOOSE:-}" ]; then
  # As between two `git gc` runs: HEAD's trees and commits are loose objects, the blobs packed.
  log "making the trees and commits loose"
  objs=$(mktemp)
  git -C "$DIR" rev-list --objects HEAD | cut -d' ' -f1 |
    git -C "$DIR" cat-file --batch-check='%(objecttype) %(objectname)' >"$objs"
  nonblobs=$(mktemp)
  grep -v '^blob ' "$objs" | cut -d' ' -f2 | git -C "$DIR" pack-objects -q --stdout >"$nonblobs"
  old_packs=$(ls "$DIR"/.git/objects/pack/pack-*)
  grep '^blob ' "$objs" | cut -d' ' -f2 | git -C "$DIR" pack-objects -q "$DIR/.git/objects/pack/pack" >/dev/null
  # shellcheck disable=SC2086
  rm -f $old_packs
  git -C "$DIR" unpack-objects -q <"$nonblobs"
  rm -f "$objs" "$nonblobs"
  log "$(git -C "$DIR" count-objects -v | tr '\n' ' ')"
fi
log "checking out"
git -C "$DIR" checkout -q -f main
git -C "$DIR" status --porcelain | head -3 | grep -q . && die "work tree not clean after checkout"
log "$DIR: $(git -C "$DIR" ls-files | wc -l) tracked files, $NSEG segments, .git $(du -sh "$DIR/.git" | cut -f1)"
