#!/usr/bin/env bash
# The warm pytest runner against the process runner and one plain pytest, on a real project
# (a repository made by make-pypi-repo.sh), interleaved, CPU time (user + system) beside wall:
#
#   cold   every segment misses (an empty local cache, sandbox layers included)
#   edit   one module many segments import gets a new line; the other results are hits
#   floor  (cold only) one pytest session per test module forked from a warm parent, two at a
#          time, with no checkdef at all (session-floor.py): what pytest alone costs per module
#
# usage: scripts/bench/warm.sh REPO MODULE [RUNS]
#   e.g. scripts/bench/warm.sh /tmp/checkdef-bench/repos/boltons boltons/typeutils.py
#
# The process runner runs in a clone whose committed checkdef.toml says `runner = "process"`.
# PATH starts with the interpreter's own directory (a pyenv shim is never run warm).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ $# -ge 2 ] || { echo "usage: $0 REPO MODULE [RUNS]" >&2; exit 2; }
REPO=$(cd "$1" && pwd) MODULE=$2 RUNS=${3:-5}
ensure_checkdef
hermetic_git
W=${CHECKDEF_BENCH_WORK:-/tmp/checkdef-bench}/warm-$(basename "$REPO")
rm -rf "$W" && mkdir -p "$W"
PY_DIR=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
export PATH="$PY_DIR:$PATH"
git clone -q "$REPO" "$W/warm"
git clone -q "$REPO" "$W/process"
python3 - "$W/process/checkdef.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("[defaults]\n", "[defaults]\nrunner = \"process\"\n", 1)
open(p, "w").write(s)
PY
git -C "$W/process" commit -qam "runner = process"
fresh() { echo "rm -rf $W/cache-$1 && mkdir -m 700 $W/cache-$1"; }
run() { echo "cd $W/$1 && CHECKDEF_CACHE_DIR=$W/cache-$1 $CHECKDEF_BIN run -q $2"; }
PLAIN="cd $W/warm && python3 -m pytest -q -p no:cacheprovider"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$BENCH_DIR/abbench.py" --runs "$RUNS" --warmup 0 --group "$(basename "$REPO") cold" \
  --json "$W/results.jsonl" \
  --prepare "warm=$(fresh warm)" --prepare "process=$(fresh process)" \
  "pytest=$PLAIN" "warm=$(run warm '--rev HEAD')" "process=$(run process '--rev HEAD')" \
  "floor=cd $W/warm && python3 $BENCH_DIR/session-floor.py ."
# Edit: results of HEAD in the cache, then a new line in MODULE before every timed run.
for r in warm process; do sh -c "$(fresh $r) && $(run $r '--rev HEAD')"; done
edit() { echo "cd $W/$1 && git checkout -q -- $MODULE && echo \"# edit \$(date +%s%N)\" >> $MODULE"; }
python3 "$BENCH_DIR/abbench.py" --runs "$RUNS" --warmup 0 --group "$(basename "$REPO") edit $MODULE" \
  --json "$W/results.jsonl" \
  --prepare "pytest=$(edit warm)" --prepare "warm=$(edit warm)" --prepare "process=$(edit process)" \
  "pytest=$PLAIN" "warm=$(run warm '')" "process=$(run process '')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
