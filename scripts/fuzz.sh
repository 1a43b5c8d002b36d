#!/usr/bin/env bash
# Fuzz checkdef's parsers of untrusted input with cargo-fuzz (libFuzzer + AddressSanitizer).
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 30 seconds for every target)
#
# Targets (fuzz/fuzz_targets/): narinfo, cache_info, nar_parse, nar_unpack, config,
# config_matcher (huge generated globs: loading builds the matcher), prepush.
# Each runs for SECONDS, one after the other, starting from the seeds in fuzz/seeds/<target>
# and the corpus it grew before (fuzz/corpus/<target>, not committed). A crash stops the script
# with libFuzzer's report; the input is saved under fuzz/artifacts/<target>/ and can be replayed
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`.
# Seeds: fuzz/seeds/<target> (committed); the grown corpus: fuzz/corpus/<target> (not committed).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, installed here when missing). cargo-fuzz wants a
# nightly compiler for the sanitizer flags; RUSTC_BOOTSTRAP=1 lets the stable one accept them.
# The first run builds the fuzz crate in release mode with ASan (a few minutes on 2 cores).
# Each target's full libFuzzer output goes to fuzz/logs/<target>.log (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-30}
[[ $SECS =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
shift || true
ALL=(narinfo cache_info nar_parse nar_unpack config config_matcher prepush)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

log() { printf '==> %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked -q cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

log "building the fuzz targets"
cargo fuzz build >&2
BIN_DIR="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

# The binaries are run directly (not through `cargo fuzz run`, which would rebuild first).
mkdir -p fuzz/logs
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log "fuzzing $t for ${SECS}s"
  rc=0
  "$BIN_DIR/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
    -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$SECS" -print_final_stats=1 \
    -max_len=65536 -timeout=10 -rss_limit_mb=2048 >"fuzz/logs/$t.log" 2>&1 || rc=$?
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "fuzz/logs/$t.log" |
    sed "s/^/    $t /" >&2 || true
  if [ "$rc" -ne 0 ]; then
    grep -E -A30 'panicked|==[0-9]+==ERROR|deadly signal|SUMMARY' "fuzz/logs/$t.log" | head -n 60 >&2 || true
    log "fuzz target $t FAILED (exit $rc); log: fuzz/logs/$t.log, input: fuzz/artifacts/$t/"
    exit 1
  fi
done
log "fuzzing done: ${TARGETS[*]}"
