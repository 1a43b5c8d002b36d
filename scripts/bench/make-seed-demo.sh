#!/usr/bin/env bash
# Generate the seed demo: packages foo and bar, each slow to import, each with a slow test, and a
# checkdef.toml with the segments foo-tests and bar-tests (the seed's includePatterns).
#
# usage: scripts/bench/make-seed-demo.sh DIR [DELAY]
#   DELAY: seconds each package sleeps on import and each test sleeps (default 1; the seed's
#          README uses 5). Two commits: the code, then checkdef.toml. Commit ids are deterministic.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [DELAY]" >&2; exit 2; }
DIR=$1 DELAY=${2:-1}
[[ $DELAY =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DELAY must be a number of seconds"
ensure_git
ensure_pytest
hermetic_git
prepare_target_dir "$DIR"
cd "$DIR"
mkdir -p src/foo src/bar tests
for m in foo bar; do
  printf '"""Demo package %s: slow to import."""\nimport time\n\ntime.sleep(%s)\nprint("%s")\n\nNAME = "%s"\n' \
    "$m" "$DELAY" "$m" "$m" >"src/$m/__init__.py"
  printf 'import time\n\nimport %s\n\n\ndef test_%s():\n    time.sleep(%s)\n    assert %s.NAME == "%s"\n' \
    "$m" "$m" "$DELAY" "$m" "$m" >"tests/test_$m.py"
done
printf '[pytest]\npythonpath = src\ntestpaths = tests\n' >pytest.ini
printf '__pycache__/\n.pytest_cache/\n.turbo/\nnode_modules/\nresult\n' >.gitignore
git init -q -b main .
git add -A
git commit -q -m "demo: packages foo and bar with tests"
cat >checkdef.toml <<'TOML'
# The seed demo's two segments (its flake.nix includePatterns).
version = 1

[defaults]
include = ["pytest.ini"]

[[segment]]
name = "foo-tests"
include = ["src/foo/**", "tests/test_foo.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_foo.py"

[[segment]]
name = "bar-tests"
include = ["src/bar/**", "tests/test_bar.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_bar.py"
TOML
git add checkdef.toml
git commit -q -m "checkdef: segments foo-tests and bar-tests"
log "seed demo in $DIR (DELAY=$DELAY s)"
