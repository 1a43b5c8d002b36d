#!/usr/bin/env bash
# The whole benchmark of docs/benchmarks.md: generate the repositories, run every comparison,
# write the tables.
#
# usage: scripts/bench/run-all.sh [PART...]
#   PARTs (default: all of them, in this order):
#     seed    the seed demo (DELAY=1): no-op vs ls-tree, nix-build, turbo; one changed file
#     100k    100,000 files / 100 segments: rev, worktree, nix, turbo, touch, remote, s3, rss
#     cold    1,000 files / 100 small segments: cold run vs one pytest of the whole suite
#     500k    500,000 files / 1,000 segments (segment command `true`): rev, worktree, rss
#     loose   100,000 files / 100 segments (command `true`), packed and with HEAD's trees loose
#             (make-repo.sh LOOSE=1): rev
#     pypi    real projects from PyPI sdists ($PYPI_PROJECTS, default boltons==26.2.0
#             simplejson==4.3.0), segments drafted by `checkdef init`: cold, shared
#
# Repositories go to $CHECKDEF_BENCH_WORK/repos (default /tmp/checkdef-bench/repos) and are
# reused when present (delete them to regenerate), results to $CHECKDEF_BENCH_WORK/results.jsonl
# (appended; the report shows the latest row per command), the Markdown tables to
# $CHECKDEF_BENCH_WORK/report.md, the machine facts to $CHECKDEF_BENCH_WORK/machine.txt.
# The first complete run takes about an hour on 2 cores (every tool runs every test once per
# repository); later runs reuse every cache and take minutes.
#
# Environment: as compare.sh (RUNS, COLD_RUNS, JOBS, CHECKDEF_BIN, CHECKDEF_BENCH_WORK).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORK=${CHECKDEF_BENCH_WORK:-/tmp/checkdef-bench}
export CHECKDEF_BENCH_WORK=$WORK
REPOS=$WORK/repos
mkdir -p "$REPOS"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(seed 100k cold 500k loose pypi)
PYPI_PROJECTS=${PYPI_PROJECTS:-boltons==26.2.0 simplejson==4.3.0}

ensure_git
ensure_python
ensure_checkdef
ensure_time
ensure_nix
ensure_nginx
ensure_turbo

machine() {
  {
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at the start"
    echo "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel:    $(uname -sr); $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "fs:        $(df -T "$WORK" | awk 'NR == 2 {print $2}') under $WORK"
    echo "checkdef:  $("$CHECKDEF_BIN" --version) ($(git -C "$REPO_ROOT" rev-parse --short HEAD)$(git -C "$REPO_ROOT" diff --quiet HEAD -- hook cache-proto || echo '+changes'), release build)"
    echo "git:       $(git --version)"
    echo "python:    $(python3 --version 2>&1), pytest $(python3 -c 'import pytest; print(pytest.__version__)')"
    echo "nix:       $(nix-build --version)"
    echo "turbo:     $("$TURBO_BIN" --version) (node $(node --version))"
    echo "nginx:     $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //')"
    echo "hyperfine-free harness: scripts/bench/abbench.py (interleaved runs, medians)"
  } >"$WORK/machine.txt"
}
machine
cat "$WORK/machine.txt" >&2

repo() {
  # repo NAME GENERATOR ARGS... : generate $REPOS/NAME unless it exists.
  local name=$1
  shift
  [ -d "$REPOS/$name/.git" ] || "$@" "$REPOS/$name"
}

for part in "${PARTS[@]}"; do
  case $part in
  seed)
    repo seed sh -c 'exec "$0" "$1" 1' "$BENCH_DIR/make-seed-demo.sh"
    "$BENCH_DIR/compare.sh" "$REPOS/seed" rev nix turbo touch rss
    ;;
  100k)
    repo r100k sh -c 'exec "$0" "$1" 100000 100' "$BENCH_DIR/make-repo.sh"
    "$BENCH_DIR/compare.sh" "$REPOS/r100k" rev worktree nix turbo touch remote s3 rss
    ;;
  cold)
    repo small sh -c 'exec "$0" "$1" 1000 100' "$BENCH_DIR/make-repo.sh"
    "$BENCH_DIR/compare.sh" "$REPOS/small" cold
    ;;
  500k)
    repo r500k sh -c 'COMMAND=true exec "$0" "$1" 500000 1000' "$BENCH_DIR/make-repo.sh"
    "$BENCH_DIR/compare.sh" "$REPOS/r500k" rev worktree rss
    ;;
  loose)
    repo r100k-true sh -c 'COMMAND=true exec "$0" "$1" 100000 100' "$BENCH_DIR/make-repo.sh"
    repo r100k-loose sh -c 'LOOSE=1 COMMAND=true exec "$0" "$1" 100000 100' "$BENCH_DIR/make-repo.sh"
    "$BENCH_DIR/compare.sh" "$REPOS/r100k-true" rev
    "$BENCH_DIR/compare.sh" "$REPOS/r100k-loose" rev
    ;;
  pypi)
    for spec in $PYPI_PROJECTS; do
      repo "${spec%%==*}" sh -c 'exec "$0" "$2" "$1"' "$BENCH_DIR/make-pypi-repo.sh" "$spec"
      "$BENCH_DIR/compare.sh" "$REPOS/${spec%%==*}" cold shared
    done
    ;;
  *) die "unknown part $part (seed, 100k, cold, 500k, loose, pypi)" ;;
  esac
done

python3 "$BENCH_DIR/report.py" "$WORK/results.jsonl" "$WORK/machine.txt" >"$WORK/report.md"
log "tables: $WORK/report.md"
