#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# It first installs what the tests need when it can (as root, via apt-get and pip):
#   nix-bin (real Nix 2.8: interop tests), nginx-light (an HTTP cache with PUT), curl, git,
#   pytest (the demo's and the integration tests' test runner), and s3s-fs (an S3 server, via
#   cargo install, reused when already installed).
# Without root it says exactly what is missing. Under CI=true the interop tests fail rather than
# skip when Nix, nginx or s3s-fs is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

missing_debs=()
command -v nix >/dev/null 2>&1 || missing_debs+=(nix-bin)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing_debs+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing_debs+=(curl)
command -v git >/dev/null 2>&1 || missing_debs+=(git)
command -v python3 >/dev/null 2>&1 || missing_debs+=(python3 python3-pip)

if [ ${#missing_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing_debs[*]} with apt-get"
    apt-get update -q >/dev/null
    # RUNLEVEL=1 keeps the nginx package from starting a system-wide server on port 80.
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing_debs[@]}" >/dev/null
  else
    log "missing: ${missing_debs[*]} — install them (e.g. sudo apt-get install ${missing_debs[*]}); tests that need them skip (they fail under CI)"
  fi
fi

if ! python3 -c 'import pytest' >/dev/null 2>&1; then
  if python3 -m pip --version >/dev/null 2>&1; then
    log "installing pytest with pip"
    python3 -m pip install -q --disable-pip-version-check pytest 2>/dev/null \
      || python3 -m pip install -q --disable-pip-version-check --break-system-packages pytest
  else
    log "missing: pytest (python3 -m pip install pytest)"
  fi
fi

# s3s-fs: a real S3 server (SigV4, conditional writes) for the S3 cache tests. Building it takes
# about 15 minutes on 2 cores, so an installed binary (PATH or ~/.cargo/bin) is reused.
S3S_FS_VERSION=0.14.1
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$cargo_bin/s3s-fs" ]; then
  log "installing s3s-fs $S3S_FS_VERSION (cargo install, about 15 minutes on 2 cores; reused afterwards)"
  # Progress: one line per 20 crates compiled, and every error.
  if cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked 2>&1 \
    | awk '/Compiling/ { n++; if (n % 20 == 0) { printf "    compiled %d crates (%s)\n", n, $2; fflush() } } /error|Installed/ { print "    " $0; fflush() }' >&2 \
    && [ -x "$cargo_bin/s3s-fs" ]; then
    :
  elif [ -n "${CI:-}" ]; then
    log "cargo install s3s-fs failed; under CI the S3 tests need it"
    exit 1
  else
    log "cargo install s3s-fs failed: the S3 tests skip (they fail under CI)"
  fi
fi
[ -x "$cargo_bin/s3s-fs" ] && export PATH="$PATH:$cargo_bin"

log "tool versions"
{ nix --version || true; /usr/sbin/nginx -v 2>&1 || true; s3s-fs --version 2>&1 || true; git --version; python3 -m pytest --version 2>&1 || true; cargo --version; } | sed 's/^/    /' >&2

log "nix-instantiate --parse flake.nix"
if command -v nix-instantiate >/dev/null 2>&1; then
  nix-instantiate --parse flake.nix >/dev/null
elif [ -n "${CI:-}" ]; then
  log "nix-instantiate is missing (it comes with nix-bin); under CI this is an error"
  exit 1
else
  log "skipped: nix-instantiate not found"
fi

log "cargo fmt --check"
cargo fmt --all -- --check

# Cargo's progress stays visible (a first build takes minutes); only the test run is captured.
log "cargo build"
cargo build --workspace --all-targets --locked

log "cargo test"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one "test result" per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
