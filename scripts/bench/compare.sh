#!/usr/bin/env bash
# Compare checkdef with the floor (git) and the alternatives on one repository.
#
# usage: scripts/bench/compare.sh REPO SCENARIO...
#
# REPO is a repository made by make-repo.sh or make-seed-demo.sh (any git repository with a
# checkdef.toml of `include` + `command` segments works). Every scenario runs its commands in
# REPO, in one invocation, interleaved (A B, B A, ...), RUNS times each after one warm-up run,
# and prints medians, min-max, ratios and peak RSS (scripts/bench/abbench.py). Results are
# appended to $OUT as JSON lines; scripts/bench/report.py turns them into tables.
#
# Scenarios:
#   rev       checkdef run --rev HEAD (all local hits)  vs  git ls-tree -r HEAD (the floor)
#   worktree  checkdef run (work tree, all local hits)  vs  git status
#   nix       checkdef run --rev HEAD  vs  the seed's approach: nix-build of a generated
#             default.nix (one derivation per segment over a filtered builtins.path, builder
#             /bin/sh, Debian's Nix, sandbox off, a private store), nothing changed
#   turbo     checkdef run --rev HEAD  vs  turbo run test (one workspace package per segment,
#             task inputs = the segment's globs, local cache only, telemetry off), nothing changed
#   touch     one file of the first segment changed before every run (not timed): checkdef run
#             (work tree) vs the segment's own test command alone (its run time); with nix and
#             turbo when those scenarios were set up in this REPO before
#   remote    100 (all) remote hits: checkdef run --rev HEAD with a fresh, empty local cache each
#             run against nginx on 127.0.0.1 (private config, PUT enabled), populated by a
#             checkdef run with a secret key and CHECKDEF_REMOTE; vs all local hits
#   s3        the same 100 remote hits from an S3 bucket: s3s-fs (a real, signature-checking S3
#             server) on 127.0.0.1, populated by a signed push through CHECKDEF_REMOTE=s3://…;
#             vs all local hits
#   rss       peak RSS (/usr/bin/time -v) of checkdef run --rev HEAD and of work-tree mode
#   cold      checkdef run with an empty cache (all segments run, -j JOBS), and with every
#             result gone but the durations of earlier runs kept (as after a change of the
#             interpreter, which changes every input hash), vs one plain `python3 -m pytest` of
#             the whole suite
#   shared    the module imported by about half the segments (gen-configs.py shared-target)
#             changed before every run (not timed): checkdef run (work tree) vs one plain
#             `python3 -m pytest` of the whole suite
#
# The first use of rev/worktree/touch/remote/s3/rss fills checkdef's cache (one cold run of every
# segment); nix and turbo build or run every segment once the same way. Their state lives
# under $CHECKDEF_BENCH_WORK/state/<repo name>/, so later invocations reuse it.
#
# Environment: RUNS (default 7), COLD_RUNS (default 5), JOBS (default nproc),
#   CHECKDEF_BIN (default: cargo build --release), CHECKDEF_BENCH_WORK (default
#   /tmp/checkdef-bench), OUT (default $CHECKDEF_BENCH_WORK/results.jsonl).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 2 ] || { sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
REPO=$(cd "$1" && pwd)
shift
[ -f "$REPO/checkdef.toml" ] || die "$REPO has no checkdef.toml"
for s in "$@"; do
  case $s in rev | worktree | nix | turbo | touch | remote | s3 | rss | cold | shared) ;; *) die "unknown scenario $s" ;; esac
done

RUNS=${RUNS:-7}
COLD_RUNS=${COLD_RUNS:-5}
JOBS=${JOBS:-$(nproc)}
WORK=${CHECKDEF_BENCH_WORK:-/tmp/checkdef-bench}
OUT=${OUT:-$WORK/results.jsonl}
NAME=$(basename "$REPO")
STATE=$WORK/state/$NAME
mkdir -p "$STATE" "$(dirname "$OUT")"

ensure_git
ensure_pytest
ensure_checkdef
hermetic_git
CD=$CHECKDEF_BIN
export CHECKDEF_CACHE_DIR=$STATE/cache CHECKDEF_REMOTE= CHECKDEF_NO_PROGRESS=1 NO_COLOR=1
export PYTHONDONTWRITEBYTECODE=1
unset CHECKDEF_TRUSTED_PUBLIC_KEYS CHECKDEF_SECRET_KEY_FILE

# The other tools' files live in REPO, invisible to git (and so to checkdef and git status).
EXCLUDE="$(git -C "$REPO" rev-parse --git-path info/exclude)"
case $EXCLUDE in /*) ;; *) EXCLUDE=$REPO/$EXCLUDE ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
for p in default.nix package.json package-lock.json turbo.json .turbo-ws/ .turbo/ node_modules/; do
  grep -qxF "$p" "$EXCLUDE" 2>/dev/null || echo "$p" >>"$EXCLUDE"
done
[ -z "$(git -C "$REPO" status --porcelain)" ] || die "$REPO has uncommitted changes"

NSEG=$(python3 "$BENCH_DIR/gen-configs.py" segments "$REPO" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
NFILES=$(git -C "$REPO" ls-tree -r HEAD | wc -l)
log "$NAME: $NFILES files, $NSEG segments; checkdef $("$CD" --version); results -> $OUT"

ab() {
  # ab GROUP [abbench options and NAME=CMD...]
  local group=$1
  shift
  python3 "$BENCH_DIR/abbench.py" --runs "${AB_RUNS:-$RUNS}" --warmup "${AB_WARMUP:-1}" --cwd "$REPO" \
    --json "$OUT" --group "$NAME ($NFILES files, $NSEG segments): $group" "$@"
}

timed() {
  # timed WHAT CMD... : run once, log the wall time.
  local what=$1 t0
  shift
  t0=$(date +%s.%N)
  "$@"
  log "$what took $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s"
}

warm_checkdef() {
  # Fill the local cache: the first time, every segment runs once.
  timed "checkdef run --rev HEAD (fills the cache on first use)" \
    sh -c "cd '$REPO' && '$CD' run --rev HEAD -q -j $JOBS 2>/dev/null"
}

setup_nix() {
  ensure_nix
  export NIX_STORE_DIR=$STATE/nix/store NIX_STATE_DIR=$STATE/nix/var NIX_LOG_DIR=$STATE/nix/log
  export NIX_CONF_DIR=$STATE/nix/etc XDG_CACHE_HOME=$STATE/nix/xdg-cache
  export NIX_CONFIG=$'sandbox = false\nsubstituters =\nbuild-users-group =\nexperimental-features = nix-command'
  mkdir -p "$NIX_STORE_DIR" "$NIX_STATE_DIR" "$NIX_LOG_DIR" "$NIX_CONF_DIR" "$XDG_CACHE_HOME"
  python3 "$BENCH_DIR/gen-configs.py" nix "$REPO"
  NB="nix-build --no-out-link -j $JOBS default.nix"
  if (cd "$REPO" && $NB --dry-run 2>&1 | grep -q 'will be built'); then
    timed "nix-build cold (building every segment)" sh -c "cd '$REPO' && $NB >/dev/null 2>&1"
  fi
  local built
  built=$(cd "$REPO" && $NB --dry-run 2>&1 | grep -c '\.drv$' || true)
  [ "$built" = 0 ] || die "nix-build would still build $built derivations"
}

setup_turbo() {
  ensure_turbo
  python3 "$BENCH_DIR/gen-configs.py" turbo "$REPO"
  TR="$TURBO_BIN run test --cache-dir=.turbo/cache --concurrency=$JOBS --output-logs=none"
  local cached
  cached=$(cd "$REPO" && $TR 2>&1 | grep -E '^ *Cached:' | tr -s ' ' || true)
  case $cached in *" $NSEG cached, $NSEG total"*) ;; *)
    timed "turbo cold (running every segment)" sh -c "cd '$REPO' && $TR --force >/dev/null 2>&1"
    cached=$(cd "$REPO" && $TR 2>&1 | grep -E '^ *Cached:' | tr -s ' ' || true)
    ;;
  esac
  log "turbo, nothing changed: $cached"
}

for scenario in "$@"; do
  log "scenario $scenario"
  case $scenario in
  rev)
    warm_checkdef
    ab "no-op, a commit" \
      "git ls-tree -r HEAD=git ls-tree -r HEAD >/dev/null" \
      "checkdef run --rev HEAD=$CD run --rev HEAD -q"
    ;;
  worktree)
    warm_checkdef
    ab "no-op, the work tree" \
      "git status=git status >/dev/null" \
      "checkdef run=$CD run -q"
    ;;
  nix)
    warm_checkdef
    setup_nix
    ab "no-op vs the seed's nix-build" \
      "checkdef run --rev HEAD=$CD run --rev HEAD -q" \
      "nix-build=$NB >/dev/null 2>&1"
    ;;
  turbo)
    warm_checkdef
    setup_turbo
    ab "no-op vs Turborepo" \
      "checkdef run --rev HEAD=$CD run --rev HEAD -q" \
      "turbo run test=$TR >/dev/null 2>&1"
    ;;
  touch)
    warm_checkdef
    TARGET=$(python3 "$BENCH_DIR/gen-configs.py" touch-target "$REPO")
    FIRST_CMD=$(python3 "$BENCH_DIR/gen-configs.py" segments "$REPO" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["command"])')
    TOUCH="printf '\\n_bench_touch = %s\\n' \"\$(date +%s%N)\" >> $TARGET"
    opts=(--prepare "checkdef run=$TOUCH")
    cmds=("test alone=$FIRST_CMD >/dev/null 2>&1" "checkdef run=$CD run -q")
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
      # The opt-in fast sandbox location (docs/configuration.md, "Where sandboxes live").
      SHM="checkdef run, sandboxes in /dev/shm"
      opts+=(--prepare "$SHM=$TOUCH" --env "$SHM=CHECKDEF_SANDBOX_DIR=/dev/shm")
      cmds+=("$SHM=$CD run -q")
    fi
    if [ -f "$REPO/default.nix" ]; then
      setup_nix
      opts+=(--prepare "nix-build=$TOUCH")
      cmds+=("nix-build=$NB >/dev/null 2>&1")
    fi
    if [ -f "$REPO/turbo.json" ]; then
      setup_turbo
      opts+=(--prepare "turbo run test=$TOUCH")
      cmds+=("turbo run test=$TR >/dev/null 2>&1")
    fi
    log "touching $TARGET before each run; first segment's command: $FIRST_CMD"
    ab "one file changed ($TARGET)" "${opts[@]}" "${cmds[@]}"
    git -C "$REPO" checkout -q -- "$TARGET"
    ;;
  remote)
    ensure_nginx
    REMOTE_ROOT=$STATE/remote
    NGX=$STATE/nginx
    mkdir -p "$REMOTE_ROOT" "$NGX"/tmp/{client_body,proxy,fastcgi,uwsgi,scgi}
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    USER_LINE=""
    [ "$(id -u)" -eq 0 ] && USER_LINE="user root root;"
    cat >"$NGX/nginx.conf" <<EOF
$USER_LINE
daemon on;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  default_type application/octet-stream;
  access_log off;
  client_body_temp_path $NGX/tmp/client_body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  client_max_body_size 0;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$PORT;
    root $REMOTE_ROOT;
    location / { dav_methods PUT DELETE; create_full_put_path on; dav_access user:rw group:r all:r; }
  }
}
EOF
    "$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf"
    NGINX_PID=$(cat "$NGX/nginx.pid")
    trap 'kill "$NGINX_PID" 2>/dev/null || true' EXIT
    URL=http://127.0.0.1:$PORT
    if [ ! -f "$STATE/bench.secret" ]; then
      (cd "$STATE" && "$CD" keygen checkdef-bench-1 --out "$STATE/bench.secret" 2>/dev/null >"$STATE/bench.public")
    fi
    export CHECKDEF_TRUSTED_PUBLIC_KEYS
    CHECKDEF_TRUSTED_PUBLIC_KEYS=$(head -1 "$STATE/bench.public")
    if [ "$(find "$REMOTE_ROOT" -name '*.narinfo' | wc -l)" -lt "$NSEG" ]; then
      timed "populating the remote (a cold run that pushes every result)" sh -c \
        "cd '$REPO' && CHECKDEF_CACHE_DIR='$STATE/populate-cache' CHECKDEF_REMOTE='$URL' CHECKDEF_SECRET_KEY_FILE='$STATE/bench.secret' '$CD' run --rev HEAD -q -j $JOBS"
    fi
    EMPTY=$STATE/empty-cache
    rm -rf "$EMPTY"
    HITS=$(cd "$REPO" && CHECKDEF_CACHE_DIR=$EMPTY CHECKDEF_REMOTE=$URL "$CD" run --rev HEAD --json 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(s["source"]=="remote" for s in d["segments"]), "of", len(d["segments"]), "from the remote")')
    log "check run with an empty local cache: $HITS"
    warm_checkdef
    ab "all hits from an HTTP cache on loopback, empty local cache" \
      --prepare "checkdef run --rev HEAD, remote hits=rm -rf '$EMPTY'" \
      --env "checkdef run --rev HEAD, remote hits=CHECKDEF_CACHE_DIR=$EMPTY" \
      --env "checkdef run --rev HEAD, remote hits=CHECKDEF_REMOTE=$URL" \
      "checkdef run --rev HEAD, local hits=$CD run --rev HEAD -q" \
      "checkdef run --rev HEAD, remote hits=$CD run --rev HEAD -q"
    kill "$NGINX_PID" 2>/dev/null || true
    trap - EXIT
    ;;
  s3)
    # s3s-fs: a real S3 server (SigV4 checked), installed by scripts/test.sh or .ci/run.
    S3S_FS=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
    [ -x "$S3S_FS" ] || die "s3s-fs not found: cargo install s3s-fs --version 0.14.1 --features binary --locked"
    S3_ROOT=$STATE/s3
    mkdir -p "$S3_ROOT/bench"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$S3_ROOT" \
      >"$STATE/s3s-fs.log" 2>&1 &
    S3_PID=$!
    trap 'kill "$S3_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
      sleep 0.1
    done
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
    URL="s3://bench?endpoint=127.0.0.1:$PORT&scheme=http&region=us-east-1"
    if [ ! -f "$STATE/bench.secret" ]; then
      (cd "$STATE" && "$CD" keygen checkdef-bench-1 --out "$STATE/bench.secret" 2>/dev/null >"$STATE/bench.public")
    fi
    export CHECKDEF_TRUSTED_PUBLIC_KEYS
    CHECKDEF_TRUSTED_PUBLIC_KEYS=$(head -1 "$STATE/bench.public")
    if [ "$(find "$S3_ROOT/bench" -name '*.narinfo' | wc -l)" -lt "$NSEG" ]; then
      rm -rf "$STATE/populate-s3-cache"
      timed "populating the bucket (pushing every result from a filled local cache)" sh -c \
        "cd '$REPO' && CHECKDEF_CACHE_DIR='$STATE/populate-s3-cache' CHECKDEF_REMOTE='$URL' CHECKDEF_SECRET_KEY_FILE='$STATE/bench.secret' '$CD' run --rev HEAD -q -j $JOBS"
    fi
    EMPTY=$STATE/empty-cache
    rm -rf "$EMPTY"
    HITS=$(cd "$REPO" && CHECKDEF_CACHE_DIR=$EMPTY CHECKDEF_REMOTE=$URL "$CD" run --rev HEAD --json 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(s["source"]=="remote" for s in d["segments"]), "of", len(d["segments"]), "from the bucket")')
    log "check run with an empty local cache: $HITS"
    warm_checkdef
    ab "all hits from an S3 bucket (s3s-fs) on loopback, empty local cache" \
      --prepare "checkdef run --rev HEAD, S3 hits=rm -rf '$EMPTY'" \
      --env "checkdef run --rev HEAD, S3 hits=CHECKDEF_CACHE_DIR=$EMPTY" \
      --env "checkdef run --rev HEAD, S3 hits=CHECKDEF_REMOTE=$URL" \
      "checkdef run --rev HEAD, local hits=$CD run --rev HEAD -q" \
      "checkdef run --rev HEAD, S3 hits=$CD run --rev HEAD -q"
    kill "$S3_PID" 2>/dev/null || true
    trap - EXIT
    ;;
  rss)
    warm_checkdef
    ensure_time
    for mode in "--rev HEAD" ""; do
      # shellcheck disable=SC2086
      kib=$(cd "$REPO" && /usr/bin/time -v "$CD" run $mode -q 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}')
      log "peak RSS of checkdef run $mode: $kib KiB"
      python3 -c 'import json,sys; print(json.dumps({"group": sys.argv[1], "name": sys.argv[2], "maxrss_kib": int(sys.argv[3])}))' \
        "$NAME ($NFILES files, $NSEG segments): peak RSS (/usr/bin/time -v)" "checkdef run ${mode:-(work tree)}" "$kib" >>"$OUT"
    done
    ;;
  cold)
    COLD=$STATE/cold-cache
    KNOWN=$STATE/cold-known-cache
    # The second cache keeps only checkdef-durations.json between runs (filled once here).
    [ -f "$KNOWN/checkdef-durations.json" ] ||
      (cd "$REPO" && CHECKDEF_CACHE_DIR=$KNOWN "$CD" run -q -j "$JOBS" >/dev/null 2>&1 || true)
    AB_RUNS=$COLD_RUNS AB_WARMUP=0 ab "cold: every segment runs (-j $JOBS) vs one pytest of the whole suite" \
      --prepare "checkdef run, empty cache=rm -rf '$COLD'" \
      --env "checkdef run, empty cache=CHECKDEF_CACHE_DIR=$COLD" \
      --prepare "checkdef run, no results, durations known=find '$KNOWN' -mindepth 1 -maxdepth 1 ! -name checkdef-durations.json -exec rm -rf {} +" \
      --env "checkdef run, no results, durations known=CHECKDEF_CACHE_DIR=$KNOWN" \
      "python3 -m pytest (whole suite)=python3 -m pytest -q -p no:cacheprovider >/dev/null 2>&1" \
      "checkdef run, empty cache=$CD run -q -j $JOBS" \
      "checkdef run, no results, durations known=$CD run -q -j $JOBS"
    ;;
  shared)
    warm_checkdef
    read -r SHARED SHARED_N SHARED_OF < <(python3 "$BENCH_DIR/gen-configs.py" shared-target "$REPO")
    log "changing $SHARED before each run: an input of $SHARED_N of $SHARED_OF segments"
    EDIT="printf '\\n_bench_edit = %s\\n' \"\$(date +%s%N)\" >> $SHARED"
    ab "$SHARED changed (an input of $SHARED_N of $SHARED_OF segments)" \
      --prepare "checkdef run=$EDIT" --prepare "python3 -m pytest (whole suite)=$EDIT" \
      "python3 -m pytest (whole suite)=python3 -m pytest -q -p no:cacheprovider >/dev/null 2>&1" \
      "checkdef run=$CD run -q -j $JOBS"
    git -C "$REPO" checkout -q -- "$SHARED"
    ;;
  esac
done
