#!/usr/bin/env bash
# Benchmark `checkdef plan --rev HEAD` against `git ls-tree -r HEAD` on a generated repository.
#
# usage: scripts/bench-plan.sh [NFILES] [NSEGMENTS] [RUNS]     (defaults: 100000 100 7)
#
# Generates (with python3 + git fast-import, in a temp dir) a repository of NFILES small files in
# NSEGMENTS packages src/pkgNNNN/ (<= 100 files per directory) plus one test per package, and a
# checkdef.toml with one segment per package (`src/pkgNNNN/**` + its test + a global input),
# packs it with `git gc`, builds checkdef with `cargo build --release` (set CHECKDEF_BIN to use a
# prebuilt binary), then times both commands, alternating, RUNS times each, and prints the
# medians and their ratio. Target: ratio <= 1.5. BENCH_KEEP=1 keeps the temp dir.
# BENCH_WORKTREE=1 also checks the files out and times work-tree mode (`checkdef plan`, whose
# clean files come from the index's stat data) against `git status --porcelain`.
set -euo pipefail

NFILES=${1:-100000}
NSEG=${2:-100}
RUNS=${3:-7}
[[ $NFILES =~ ^[0-9]+$ && $NSEG =~ ^[0-9]+$ && $RUNS =~ ^[0-9]+$ ]] || {
  echo "usage: $0 [NFILES] [NSEGMENTS] [RUNS]" >&2
  exit 2
}
[ "$RUNS" -ge 5 ] || { echo "RUNS must be >= 5" >&2; exit 2; }
command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${CHECKDEF_BIN:-}" ]; then
  echo "building checkdef (release)..." >&2
  (cd "$ROOT" && cargo build --release -q -p checkdef)
  CHECKDEF_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/checkdef"
fi
[ -x "$CHECKDEF_BIN" ] || { echo "no checkdef binary at $CHECKDEF_BIN" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/checkdef-bench.XXXXXX")
if [ "${BENCH_KEEP:-0}" = 1 ]; then
  echo "keeping $WORK" >&2
else
  trap 'rm -rf "$WORK"' EXIT
fi
REPO="$WORK/repo"

# Hermetic git: no user or system configuration.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$WORK"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
export CHECKDEF_CACHE_DIR="$WORK/cache"

git init -q -b main "$REPO"
echo "generating $NFILES files in $NSEG segments..." >&2
python3 - "$NFILES" "$NSEG" "$REPO/checkdef.toml" <<'PY' | git -C "$REPO" fast-import --quiet
import sys
nfiles, nseg, config_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = sys.stdout.buffer
def data(b):
    out.write(b"data %d\n" % len(b)); out.write(b); out.write(b"\n")
config = ["version = 1\n\n[defaults]\ninclude = [\"pytest.ini\"]\nenv = { PYTHONPATH = \"src\" }\n"]
for s in range(nseg):
    pkg = f"pkg{s:04d}"
    config.append(f'\n[[segment]]\nname = "{pkg}-tests"\ninclude = ["src/{pkg}/**", "tests/test_{pkg}.py"]\n'
                  f'command = "python3 -m pytest -q tests/test_{pkg}.py"\n')
config = "".join(config).encode()
with open(config_path, "wb") as f:
    f.write(config)
out.write(b"commit refs/heads/main\ncommitter bench <bench@example.invalid> 1112911993 +0000\n")
data(b"generated repository\n")
def file(path, content):
    out.write(b"M 100644 inline %s\n" % path.encode()); data(content)
file("checkdef.toml", config)
file("pytest.ini", b"[pytest]\npythonpath = src\n")
file(".gitignore", b"__pycache__/\n")
per, extra = divmod(nfiles - nseg, nseg)
for s in range(nseg):
    pkg = f"pkg{s:04d}"
    file(f"tests/test_{pkg}.py", f"import {pkg}\n\ndef test_{pkg}():\n    assert {pkg}.NAME == '{pkg}'\n".encode())
    n = per + (1 if s < extra else 0)
    file(f"src/{pkg}/__init__.py", f'NAME = "{pkg}"\n'.encode())
    for i in range(1, n):
        file(f"src/{pkg}/sub{i // 100:03d}/mod{i:05d}.py", f"VALUE = {i}\n\ndef f_{i}(x):\n    return x + {i} + {s}\n".encode())
out.write(b"\n")
PY
git -C "$REPO" gc -q
if [ "${BENCH_WORKTREE:-0}" = 1 ]; then
  git -C "$REPO" checkout -q -f HEAD -- .
  sleep 1 && git -C "$REPO" status --porcelain >/dev/null   # let git refresh racy index entries
else
  git -C "$REPO" reset -q   # index = HEAD; the work tree only needs checkdef.toml for --rev
fi
COUNT=$(git -C "$REPO" ls-tree -r HEAD | wc -l)
echo "repository: $COUNT files, $NSEG segments, $(du -sh "$REPO/.git" | cut -f1) in .git" >&2

# Warm up both (page cache), and check that checkdef succeeds.
git -C "$REPO" ls-tree -r HEAD >/dev/null
(cd "$REPO" && "$CHECKDEF_BIN" plan --rev HEAD --json >/dev/null)

python3 - "$REPO" "$CHECKDEF_BIN" "$RUNS" "${BENCH_WORKTREE:-0}" <<'PY'
import statistics, subprocess, sys, time
repo, bin_, runs, worktree = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cmds = {
    "git ls-tree -r HEAD": ["git", "ls-tree", "-r", "HEAD"],
    "checkdef plan --rev HEAD": [bin_, "plan", "--rev", "HEAD"],
}
if worktree:
    cmds["git status --porcelain"] = ["git", "status", "--porcelain"]
    cmds["checkdef plan (work tree)"] = [bin_, "plan"]
times = {k: [] for k in cmds}
for _ in range(runs):
    for name, argv in cmds.items():
        t = time.perf_counter()
        subprocess.run(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times[name].append(time.perf_counter() - t)
med = {k: statistics.median(v) for k, v in times.items()}
for k, v in times.items():
    print(f"{k:28} median {med[k]*1000:8.1f} ms   (runs: {' '.join(f'{x*1000:.0f}' for x in v)})")
ratio = med["checkdef plan --rev HEAD"] / med["git ls-tree -r HEAD"]
print(f"ratio checkdef/git: {ratio:.2f} (target <= 1.5)")
if worktree:
    r = med["checkdef plan (work tree)"] / med["git status --porcelain"]
    print(f"work tree: checkdef plan / git status: {r:.2f}")
PY
