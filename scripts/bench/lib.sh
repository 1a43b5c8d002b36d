# Shared helpers for scripts/bench/*.sh (sourced, not run).
#
# Tools the benchmarks need are installed on demand: Debian packages with apt-get (as root),
# turbo from the npm registry into $CHECKDEF_BENCH_TOOLS (default /tmp/checkdef-bench-tools).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
CHECKDEF_BENCH_TOOLS=${CHECKDEF_BENCH_TOOLS:-/tmp/checkdef-bench-tools}
TURBO_VERSION=${TURBO_VERSION:-2.11.11}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Hermetic git: no user or system configuration, fixed identities and dates.
hermetic_git() {
  export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
  export GIT_AUTHOR_NAME=checkdef-bench GIT_AUTHOR_EMAIL=bench@example.invalid
  export GIT_COMMITTER_NAME=checkdef-bench GIT_COMMITTER_EMAIL=bench@example.invalid
  export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
  unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE
}

apt_install() {
  # apt_install PKG... : install Debian packages (needs root and apt-get).
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them"
  [ "$(id -u)" -eq 0 ] || die "need $*; install them (sudo apt-get install $*)"
  log "apt-get install $*"
  # RUNLEVEL=1 keeps the nginx package from starting a system-wide server.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

ensure_git() { command -v git >/dev/null || apt_install git; }
ensure_python() {
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import tomllib' 2>/dev/null || die "python3 >= 3.11 is needed (tomllib)"
}
ensure_pytest() {
  ensure_python
  python3 -c 'import pytest' 2>/dev/null && return
  apt_install python3-pytest 2>/dev/null || python3 -m pip install -q --break-system-packages pytest
}
ensure_time() { [ -x /usr/bin/time ] || apt_install time; }
ensure_nix() { command -v nix-build >/dev/null || apt_install nix-bin; }
ensure_nginx() {
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$NGINX_BIN" ] || { apt_install nginx-light; NGINX_BIN=/usr/sbin/nginx; }
}
ensure_perf_tools() { command -v valgrind >/dev/null || apt_install valgrind; }

ensure_turbo() {
  # Installs turbo@$TURBO_VERSION from the npm registry into $CHECKDEF_BENCH_TOOLS; sets TURBO_BIN.
  command -v npm >/dev/null || apt_install nodejs npm
  TURBO_BIN="$CHECKDEF_BENCH_TOOLS/node_modules/.bin/turbo"
  export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 TURBO_NO_UPDATE_NOTIFIER=1
  if [ ! -x "$TURBO_BIN" ] || [ "$("$TURBO_BIN" --version 2>/dev/null)" != "$TURBO_VERSION" ]; then
    mkdir -p "$CHECKDEF_BENCH_TOOLS"
    [ -f "$CHECKDEF_BENCH_TOOLS/package.json" ] ||
      echo '{"name":"checkdef-bench-tools","private":true}' >"$CHECKDEF_BENCH_TOOLS/package.json"
    log "npm install turbo@$TURBO_VERSION into $CHECKDEF_BENCH_TOOLS"
    (cd "$CHECKDEF_BENCH_TOOLS" && npm install -q --no-audit --no-fund "turbo@$TURBO_VERSION" >/dev/null)
  fi
}

ensure_checkdef() {
  # Sets CHECKDEF_BIN: $CHECKDEF_BIN if given, else a fresh `cargo build --release`.
  if [ -z "${CHECKDEF_BIN:-}" ]; then
    log "cargo build --release -p checkdef"
    (cd "$REPO_ROOT" && nice cargo build --release -q -p checkdef)
    CHECKDEF_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/checkdef"
  fi
  [ -x "$CHECKDEF_BIN" ] || die "no checkdef binary at $CHECKDEF_BIN"
  CHECKDEF_BIN=$(cd "$(dirname "$CHECKDEF_BIN")" && pwd)/$(basename "$CHECKDEF_BIN")
  export CHECKDEF_BIN
}

prepare_target_dir() {
  # prepare_target_dir DIR : DIR must not exist or be empty.
  if [ -e "$1" ] && [ -n "$(ls -A "$1" 2>/dev/null)" ]; then die "$1 exists and is not empty"; fi
  mkdir -p "$1"
}
