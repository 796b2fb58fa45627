#!/usr/bin/env bash
# stack.sh installs, starts, stops and reports the local stack that Parley runs on:
# Redis (Debian's redis-server), NATS with JetStream (nats-server built with go install) and
# Apache Cassandra 5.0 (cassandra-all and its runtime jars from Maven Central, on Java 17).
#
#   stack.sh deps                      install whatever is missing (idempotent)
#   stack.sh up [--started-file F] [SERVICE...]
#                                      start what is not running; wait until ready
#   stack.sh down [--from-file F] [SERVICE...]
#                                      stop what this stack started (by PID file)
#   stack.sh status                    one line per service; exit 0
#   stack.sh logs SERVICE              the last lines of a service's log
#
# SERVICE is redis, nats or cassandra (all by default; down also stops parleyd if make run
# started it). State (data, logs, PID files) lives under $PARLEY_STATE_DIR (.parley/), downloads
# under $PARLEY_CACHE_DIR (~/.cache/parley). Ports and versions: deploy/local/env.sh.
set -euo pipefail

PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$PARLEY_ROOT/deploy/local"
# shellcheck source=env.sh
source "$HERE/env.sh"

ALL_SERVICES=(redis nats cassandra)

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"
  fi
}

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages yourself: $*"
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  # Waits for another apt-get (another checkout's make deps) instead of failing on its lock.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}

# ---- installation ---------------------------------------------------------------------------

nats_bin() { echo "$PARLEY_CACHE_DIR/bin/nats-server-$NATS_SERVER_VERSION"; }
cassandra_lib() { echo "$PARLEY_CACHE_DIR/cassandra-$CASSANDRA_VERSION/lib"; }

install_tools() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  find_java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  [ -f "$(cassandra_lib)/.complete" ] || command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

install_nats() {
  local bin; bin=$(nats_bin)
  [ -x "$bin" ] && return 0
  command -v go >/dev/null 2>&1 || die "go is required to build nats-server $NATS_SERVER_VERSION"
  log "building nats-server $NATS_SERVER_VERSION with go install (once)"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && GOBIN="$tmp/bin" GOFLAGS= go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION") \
    || { rm -rf "$tmp"; die "go install nats-server $NATS_SERVER_VERSION failed"; }
  mkdir -p "$(dirname "$bin")"
  mv "$tmp/bin/nats-server" "$bin"
  rm -rf "$tmp"
}

install_cassandra() {
  local lib; lib=$(cassandra_lib)
  [ -f "$lib/.complete" ] && return 0
  log "fetching Cassandra $CASSANDRA_VERSION jars from Maven Central (once, ~70 MB)"
  local tmp; tmp=$(mktemp -d)
  if ! mvn -B -q -f "$HERE/cassandra/pom.xml" -Dcassandra.version="$CASSANDRA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >"$tmp/mvn.log" 2>&1; then
    tail -n 30 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "could not fetch org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION with Maven"
  fi
  mkdir -p "$(dirname "$lib")"
  rm -rf "$lib"
  mv "$tmp/lib" "$lib"
  rm -rf "$tmp"
  touch "$lib/.complete"
}

# find_java prints a java binary of version 11 or 17 (what Cassandra 5.0 supports).
find_java() {
  local c v
  for c in "${PARLEY_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" /usr/lib/jvm/java-17-openjdk-*/bin/java \
           "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/java-11-openjdk-*/bin/java; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    v=$("$c" -XX:+IgnoreUnrecognizedVMOptions -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    if [ "$v" = 17 ] || [ "$v" = 11 ]; then echo "$c"; return 0; fi
  done
  return 1
}

cmd_deps() {
  install_tools
  install_nats
  install_cassandra
  log "dependencies ready: redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), nats-server $NATS_SERVER_VERSION, cassandra $CASSANDRA_VERSION on $(find_java)"
}

# ---- processes ------------------------------------------------------------------------------

pidfile() { echo "$PARLEY_STATE_DIR/$1/$1.pid"; }
logfile() { echo "$PARLEY_STATE_DIR/$1/$1.log"; }

# expected_cmd is a word that must appear in the command line of the service's process, so a PID
# reused by an unrelated process is never mistaken for ours (and never signalled).
expected_cmd() {
  case "$1" in
    redis) echo redis-server ;;
    nats) echo nats-server ;;
    cassandra) echo CassandraDaemon ;;
    parleyd) echo parleyd ;;
  esac
}

service_pid() {
  local f pid; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(expected_cmd "$1")" || return 1
  echo "$pid"
}

service_port() {
  case "$1" in
    redis) echo "$PARLEY_REDIS_PORT" ;;
    nats) echo "$PARLEY_NATS_PORT" ;;
    cassandra) echo "$PARLEY_CASSANDRA_PORT" ;;
  esac
}

# port_open PORT [HOST]: something accepts TCP connections there (HOST default 127.0.0.1).
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# service_host is the address a service listens on (deploy/cluster/cluster.sh overrides it, and
# the other per-service functions, to reuse start_service and stop_service).
service_host() { echo 127.0.0.1; }

# stop_grace is how long a service may take to stop after SIGTERM before it is killed.
stop_grace() { case "$1" in cassandra*) echo 60 ;; *) echo 20 ;; esac; }

# LAUNCHER is the script whose launch function start_service runs (launch NAME execs the service
# in the foreground).
: "${LAUNCHER:=$HERE/stack.sh}"
launch() { "launch_$1"; }

ready() {
  case "$1" in
    redis) [ "$(redis-cli -h 127.0.0.1 -p "$PARLEY_REDIS_PORT" ping 2>/dev/null)" = PONG ] ;;
    nats) curl -fsS -o /dev/null "http://127.0.0.1:$PARLEY_NATS_MONITOR_PORT/healthz?js-enabled-only=true" 2>/dev/null ;;
    cassandra) grep -q "Starting listening for CQL clients" "$(logfile cassandra)" 2>/dev/null && port_open "$PARLEY_CASSANDRA_PORT" ;;
  esac
}

start_timeout() {
  case "$1" in
    redis) echo "$PARLEY_REDIS_START_TIMEOUT" ;;
    nats) echo "$PARLEY_NATS_START_TIMEOUT" ;;
    cassandra) echo "$PARLEY_CASSANDRA_START_TIMEOUT" ;;
  esac
}

launch_redis() {
  exec redis-server --bind 127.0.0.1 --port "$PARLEY_REDIS_PORT" --protected-mode yes \
    --save '' --appendonly no --dir "$PARLEY_STATE_DIR/redis" --daemonize no --logfile ''
}

launch_nats() {
  local dir="$PARLEY_STATE_DIR/nats"
  cat >"$dir/nats.conf" <<EOF
# Written by deploy/local/stack.sh; edit env.sh or the PARLEY_NATS_* variables instead.
server_name: parley-local
listen: 127.0.0.1:$PARLEY_NATS_PORT
http: 127.0.0.1:$PARLEY_NATS_MONITOR_PORT
max_payload: 1MB
jetstream {
  store_dir: "$dir/jetstream"
  max_memory_store: 256MB
  max_file_store: 8GB
  sync_interval: $PARLEY_NATS_SYNC_INTERVAL
}
EOF
  exec "$(nats_bin)" -c "$dir/nats.conf"
}

launch_cassandra() {
  cassandra_exec "$PARLEY_STATE_DIR/cassandra" 127.0.0.1 "$PARLEY_CASSANDRA_PORT" "$PARLEY_CASSANDRA_STORAGE_PORT" \
    "$PARLEY_CASSANDRA_HEAP" "127.0.0.1:$PARLEY_CASSANDRA_STORAGE_PORT" "" SimpleSnitch parley-local false
}

# cassandra_exec DIR LISTEN NATIVE_PORT STORAGE_PORT HEAP SEEDS INITIAL_TOKEN SNITCH CLUSTER HINTS
# writes DIR/conf and execs one Cassandra node in the foreground. INITIAL_TOKEN empty: a random
# token (one node); SNITCH GossipingPropertyFileSnitch reads DIR/conf/cassandra-rackdc.properties.
cassandra_exec() {
  local dir=$1 listen=$2 native=$3 storage=$4 heap=$5 seeds=$6 token=$7 snitch=$8 cluster=$9 hints=${10}
  local lib java jamm
  lib=$(cassandra_lib)
  java=$(find_java) || die "no Java 11 or 17 found for Cassandra"
  jamm=$(ls "$lib"/jamm-*.jar | head -n1)
  mkdir -p "$dir/conf" "$dir/data" "$dir/tmp" "$dir/logs"
  local sync
  case "$PARLEY_CASSANDRA_COMMITLOG_SYNC" in
    group) sync="commitlog_sync: group\ncommitlog_sync_group_window: $PARLEY_CASSANDRA_COMMITLOG_WINDOW" ;;
    batch) sync="commitlog_sync: batch" ;;
    periodic) sync="commitlog_sync: periodic\ncommitlog_sync_period: 10000ms" ;;
    *) die "PARLEY_CASSANDRA_COMMITLOG_SYNC=$PARLEY_CASSANDRA_COMMITLOG_SYNC: want group, batch or periodic" ;;
  esac
  local tokenline=""
  [ -n "$token" ] && tokenline="initial_token: $token"
  sed -e "s|@STORAGE_PORT@|$storage|g" \
      -e "s|@NATIVE_PORT@|$native|g" \
      -e "s|@DATA_DIR@|$dir/data|g" \
      -e "s|@COMMITLOG_SYNC@|$sync|" \
      -e "s|@CLUSTER_NAME@|$cluster|" \
      -e "s|@INITIAL_TOKEN@|$tokenline|" \
      -e "s|@SNITCH@|$snitch|" \
      -e "s|@SEEDS@|$seeds|" \
      -e "s|@LISTEN@|$listen|g" \
      -e "s|@HINTS@|$hints|" \
      "$HERE/cassandra/cassandra.yaml.in" >"$dir/conf/cassandra.yaml"
  cp "$HERE/cassandra/logback.xml" "$dir/conf/logback.xml"
  local opts=()
  mapfile -t opts < <(grep -v -e '^#' -e '^[[:space:]]*$' "$HERE/cassandra/jvm.options")
  export MALLOC_ARENA_MAX=4
  exec "$java" -Xms"$heap" -Xmx"$heap" "${opts[@]}" \
    -javaagent:"$jamm" \
    -Dcassandra.config="file://$dir/conf/cassandra.yaml" \
    -Dcassandra.storagedir="$dir/data" \
    -Dcassandra.logdir="$dir/logs" \
    -Dlogback.configurationFile="file://$dir/conf/logback.xml" \
    -Djava.io.tmpdir="$dir/tmp" -Djna.tmpdir="$dir/tmp" \
    -cp "$dir/conf:$lib/*" org.apache.cassandra.service.CassandraDaemon
}

fail_with_log() {
  local name=$1; shift
  log "error: $*"
  log "last lines of $(logfile "$name"):"
  tail -n 40 "$(logfile "$name")" >&2 || true
  exit 1
}

# start_service starts one service unless it already runs, then waits for readiness.
# It prints the service's name on stdout when (and only when) it started it.
start_service() {
  local name=$1 pid port host timeout
  if pid=$(service_pid "$name"); then
    log "$name already running (pid $pid)"
    return 0
  fi
  port=$(service_port "$name")
  host=$(service_host "$name")
  if port_open "$port" "$host"; then
    die "$name: port $host:$port is already in use by a process this stack did not start; stop it or change the port (deploy/local/env.sh, deploy/cluster/env.sh)"
  fi
  mkdir -p "$PARLEY_STATE_DIR/$name"
  local lf; lf=$(logfile "$name")
  # Each start gets a fresh log (readiness looks for a line in it); earlier starts' logs are
  # kept, appended to <log>.old, so a restart does not erase what led to it.
  if [ -s "$lf" ]; then { echo "== $(date -u +%FT%TZ) restarted"; cat "$lf"; } >>"$lf.old"; fi
  : >"$lf"
  log "starting $name on $host:$port (log: ${lf#"$PARLEY_ROOT"/})"
  # setsid: the service outlives the make invocation and its terminal's Ctrl-C.
  setsid bash -c "source '$LAUNCHER' --source-only; launch '$name'" >>"$lf" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$(pidfile "$name")"
  timeout=$(start_timeout "$name")
  local start=$SECONDS
  until ready "$name"; do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(pidfile "$name")"; fail_with_log "$name" "$name exited during start-up"; }
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      fail_with_log "$name" "$name not ready after ${timeout}s (still running as pid $pid; 'make down' stops it)"
    fi
    sleep 0.5
  done
  log "$name ready in $((SECONDS - start))s (pid $pid)"
  echo "$name"
}

stop_service() {
  local name=$1 pid grace
  if ! pid=$(service_pid "$name"); then
    rm -f "$(pidfile "$name")"
    return 0
  fi
  grace=$(stop_grace "$name")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$grace" ]; then
      log "$name did not stop within ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$(pidfile "$name")"
}

cmd_up() {
  local started_file="" services=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --started-file) started_file=$2; shift 2 ;;
      *) services+=("$1"); shift ;;
    esac
  done
  [ ${#services[@]} -gt 0 ] || services=("${ALL_SERVICES[@]}")
  cmd_deps
  local s started
  for s in "${services[@]}"; do
    check_service "$s"
    started=$(start_service "$s")
    if [ -n "$started" ] && [ -n "$started_file" ]; then echo "$started" >>"$started_file"; fi
  done
}

cmd_down() {
  local services=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --from-file)
        [ -f "$2" ] && mapfile -t -O "${#services[@]}" services <"$2"
        [ ${#services[@]} -gt 0 ] || { log "nothing to stop"; return 0; }
        shift 2 ;;
      *) services+=("$1"); shift ;;
    esac
  done
  [ ${#services[@]} -gt 0 ] || services=(parleyd "${ALL_SERVICES[@]}")
  local s
  for s in "${services[@]}"; do
    [ "$s" = parleyd ] || check_service "$s"
    stop_service "$s"
  done
}

cmd_status() {
  local s pid
  for s in parleyd "${ALL_SERVICES[@]}"; do
    if pid=$(service_pid "$s"); then
      if [ "$s" = parleyd ]; then
        printf '%-10s running  pid %-7s\n' "$s" "$pid"
      elif ready "$s"; then
        printf '%-10s running  pid %-7s 127.0.0.1:%s ready\n' "$s" "$pid" "$(service_port "$s")"
      else
        printf '%-10s running  pid %-7s 127.0.0.1:%s not ready\n' "$s" "$pid" "$(service_port "$s")"
      fi
    else
      printf '%-10s stopped\n' "$s"
    fi
  done
}

check_service() {
  case "$1" in
    redis|nats|cassandra) ;;
    *) die "unknown service '$1' (want one of: ${ALL_SERVICES[*]})" ;;
  esac
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    deps) cmd_deps ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    logs) check_service "${1:-}"; tail -n "${LINES:-60}" "$(logfile "$1")" ;;
    *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

if [ "${1:-}" != --source-only ]; then main "$@"; fi
