#!/usr/bin/env bash
# The seed demo, end to end, on the local embedded cache (no server):
#   two packages (foo, bar), each slow to import, each with a slow test, two segments.
#   1. plain pytest            (everything, sequentially: the baseline)
#   2. checkdef run, cold      (both segments run, in parallel, in filtered sandboxes)
#   3. checkdef run, unchanged (both cached: well under a second)
#   4. edit src/foo, run again (only foo-tests runs; bar-tests stays cached)
# Usage: scripts/demo.sh [--keep]   DEMO_DELAY=seconds (default 2) sets each sleep;
#        CHECKDEF_BIN=path uses that binary instead of building one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DELAY=${DEMO_DELAY:-2}
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
[ -n "${NO_COLOR:-}" ] && say() { printf '\n== %s\n' "$*" >&2; }

if ! python3 -c 'import pytest' >/dev/null 2>&1; then
  say "installing pytest (pip)"
  python3 -m pip install -q pytest 2>/dev/null || python3 -m pip install -q --break-system-packages pytest
fi

# The `demo` profile: optimised, but no LTO and many codegen units, so a first build takes a few
# minutes on two cores instead of a quarter of an hour (Cargo.toml says why). Cargo's own
# progress is shown: the first build is the slow part of this script.
if [ -n "${CHECKDEF_BIN:-}" ]; then
  CHECKDEF=$CHECKDEF_BIN    # a binary you already built (e.g. target/release/checkdef)
else
  say "building checkdef (cargo build --profile demo; the first build takes a few minutes)"
  (cd "$ROOT" && cargo build --profile demo --locked -p checkdef)
  CHECKDEF="$ROOT/target/demo/checkdef"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/checkdef-demo.XXXXXX")
if [ "$KEEP" = 1 ]; then echo "keeping $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
REPO=$WORK/repo
export CHECKDEF_CACHE_DIR=$WORK/cache   # the local embedded cache, private to this demo
unset CHECKDEF_REMOTE CHECKDEF_SECRET_KEY_FILE
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid

mkdir -p "$REPO/src/foo" "$REPO/src/bar" "$REPO/tests"
cd "$REPO"
for m in foo bar; do
  cat > "src/$m/__init__.py" <<PY
"""Demo package $m: deliberately slow to import."""
import time

time.sleep($DELAY)
NAME = "$m"
PY
  cat > "tests/test_$m.py" <<PY
import time

import $m


def test_$m():
    time.sleep($DELAY)
    assert $m.NAME == "$m"
PY
done
printf '[pytest]\npythonpath = src\ntestpaths = tests\n' > pytest.ini
printf '__pycache__/\n.pytest_cache/\n' > .gitignore
cat > checkdef.toml <<'TOML'
version = 1

[defaults]
include = ["pytest.ini"]      # shared by every segment

[[segment]]
name = "foo-tests"
description = "Foo module tests"
include = ["src/foo/**", "tests/test_foo.py"]
tests = ["tests/test_foo.py"]

[[segment]]
name = "bar-tests"
description = "Bar module tests"
include = ["src/bar/**", "tests/test_bar.py"]
tests = ["tests/test_bar.py"]
TOML
git init -q -b main .
git add -A && git commit -q -m "demo: foo and bar with slow tests"
echo "demo repository: $REPO (each import and each test sleeps ${DELAY}s)" >&2

timed() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); printf '   wall time: %.2fs\n' "$(echo "$e - $s" | bc 2>/dev/null || python3 -c "print($e-$s)")" >&2; }

say "1. plain pytest: every test, every time"
timed python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -n 1 >&2

say "2. checkdef run (cold cache): both segments run, in parallel, each in a filtered sandbox"
timed "$CHECKDEF" run

say "3. checkdef run (nothing changed): both results come from the cache"
timed "$CHECKDEF" run

say "4. edit src/foo and run again: only foo-tests runs, bar-tests stays cached"
sed -i 's/^NAME = "foo"$/NAME = "foo"  # edited/' src/foo/__init__.py
timed "$CHECKDEF" run

if [ "$KEEP" = 1 ]; then
  say "done — the cache is kept in $CHECKDEF_CACHE_DIR (a Nix file:// binary cache)"
else
  say "done — the demo's cache (a Nix file:// binary cache, removed with the demo directory; --keep keeps it) held:"
fi
ls "$CHECKDEF_CACHE_DIR" >&2
