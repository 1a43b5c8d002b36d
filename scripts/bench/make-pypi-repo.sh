#!/usr/bin/env bash
# A real project nobody here wrote, as a git repository with the checkdef.toml `checkdef init`
# drafts for it: the sdist of NAME==VERSION from PyPI (sdists ship their tests), unpacked.
#
# usage: scripts/bench/make-pypi-repo.sh DIR NAME==VERSION
#   e.g. scripts/bench/make-pypi-repo.sh /tmp/boltons boltons==26.2.0
#
# Downloads with `pip download --no-binary :all: --no-deps` into
# $CHECKDEF_BENCH_TOOLS/sdists/NAME==VERSION/ (reused later), unpacks it into DIR, commits it,
# runs `checkdef init` (one segment per test module) and commits the drafted checkdef.toml.
# Fails unless every drafted segment passes a cold `checkdef run` (a benchmark of failing checks
# would measure the wrong thing). The project's own dependencies are not installed: pick
# libraries whose tests need nothing but pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 2 ] || { echo "usage: $0 DIR NAME==VERSION" >&2; exit 2; }
DIR=$1 SPEC=$2
[[ $SPEC =~ ^[A-Za-z0-9._-]+==[A-Za-z0-9._+-]+$ ]] || die "expected NAME==VERSION, got $SPEC"
ensure_git
ensure_pytest
ensure_checkdef
hermetic_git
prepare_target_dir "$DIR"

DL=$CHECKDEF_BENCH_TOOLS/sdists/$SPEC
sdist() { for f in "$DL"/*.tar.gz "$DL"/*.zip; do [ -f "$f" ] && { echo "$f"; return; }; done; }
if [ -z "$(sdist)" ]; then
  mkdir -p "$DL"
  log "pip download $SPEC (sdist)"
  python3 -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps -d "$DL" "$SPEC"
fi
SDIST=$(sdist)
[ -n "$SDIST" ] || die "pip download left no sdist in $DL"
case $SDIST in
*.tar.gz) tar -xzf "$SDIST" -C "$DIR" --strip-components=1 ;;
*.zip)
  python3 - "$SDIST" "$DIR" <<'PY'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        parts = info.filename.split("/", 1)
        if len(parts) < 2 or not parts[1] or info.is_dir():
            continue
        dest = os.path.join(sys.argv[2], parts[1])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
PY
  ;;
esac
cd "$DIR"
printf '__pycache__/\n.pytest_cache/\n' >>.gitignore
git init -q -b main .
git add -A
git commit -q -m "$SPEC: the sdist as published on PyPI"
log "checkdef init"
"$CHECKDEF_BIN" init 2>&1 | sed -n '/segments/!p' >&2
git add checkdef.toml
git commit -q -m "checkdef.toml drafted by checkdef init"
NSEG=$(grep -c '^\[\[segment\]\]' checkdef.toml)
log "$DIR: $SPEC, $(git ls-files | wc -l) files, $NSEG segments; checking that every segment passes"
CHECK_CACHE=$(mktemp -d)
trap 'rm -rf "$CHECK_CACHE"' EXIT
CHECKDEF_CACHE_DIR=$CHECK_CACHE PYTHONDONTWRITEBYTECODE=1 "$CHECKDEF_BIN" run -q --rev HEAD ||
  die "some drafted segments fail in $DIR (see above)"
