#!/usr/bin/env bash
# cluster.sh runs Parley as a replicated cluster on this machine, everything on loopback:
# 3 NATS servers in one JetStream cluster, 3 Cassandra 5.0 nodes (127.0.0.1-3), a Redis primary
# and replica watched by 3 Sentinels, 2 edges, 2 delivery workers and 2 api processes of
# parleyd, and HAProxy in front of the edges and the apis (one URL for clients).
#
#   cluster.sh up [NODE...]        install what is missing, start what is not running, wait until
#                                  ready; without NODE, print the URL and a demo token
#   cluster.sh down [NODE...]      stop what runs (by PID file), newest tier first
#   cluster.sh status              one line per node; exit 0
#   cluster.sh nodes               name, kind, PID file, command word, health URL (tab-separated;
#                                  what the fault-injection suite reads)
#   cluster.sh url                 the URL clients use
#   cluster.sh secret              the HS256 secret the cluster's parleyd verify tokens with
#   cluster.sh clean               down, then delete the cluster's state
#
# NODE is a name such as nats-2, cassandra-1, redis-1, sentinel-3, edge-1, delivery-2, api-1 or
# haproxy; or a kind (nats, cassandra, redis, sentinel, edge, delivery, api). State (data, logs,
# PID files) lives under $PARLEY_CLUSTER_DIR (.parley/cluster). Counts, ports and sizes:
# deploy/cluster/env.sh. Topology and failover figures: docs/operations.md.
set -euo pipefail

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAUNCHER="$CLUSTER_HERE/cluster.sh"
# stack.sh gives the installers, find_java, cassandra_exec, start_service and stop_service; the
# per-service functions below replace its own for the cluster's nodes.
# shellcheck source=../local/stack.sh
source "$CLUSTER_HERE/../local/stack.sh" --source-only
# shellcheck source=env.sh
source "$CLUSTER_HERE/env.sh"

log() { printf 'cluster: %s\n' "$*" >&2; }

# ---- topology -------------------------------------------------------------------------------

nodes_of() {
  local i
  case "$1" in
    nats) for ((i = 1; i <= PARLEY_CLUSTER_NATS; i++)); do echo "nats-$i"; done ;;
    cassandra) for ((i = 1; i <= PARLEY_CLUSTER_CASSANDRA; i++)); do echo "cassandra-$i"; done ;;
    redis) i=0; for _ in $PARLEY_CLUSTER_REDIS_PORTS; do i=$((i + 1)); echo "redis-$i"; done ;;
    sentinel) for ((i = 1; i <= PARLEY_CLUSTER_SENTINELS; i++)); do echo "sentinel-$i"; done ;;
    edge) for ((i = 1; i <= PARLEY_CLUSTER_EDGES; i++)); do echo "edge-$i"; done ;;
    delivery) for ((i = 1; i <= PARLEY_CLUSTER_DELIVERIES; i++)); do echo "delivery-$i"; done ;;
    api) for ((i = 1; i <= PARLEY_CLUSTER_APIS; i++)); do echo "api-$i"; done ;;
    haproxy) echo haproxy ;;
  esac
}

# Start order; down goes the other way.
TIERS=(nats cassandra redis sentinel api delivery edge haproxy)

kind_of() { echo "${1%-*}"; }
index_of() { echo "${1##*-}"; }

all_nodes() { local k; for k in "${TIERS[@]}"; do nodes_of "$k"; done; }

# expand turns node names and kinds into node names, checked.
expand() {
  local a k found
  for a in "$@"; do
    found=
    for k in "${TIERS[@]}"; do
      if [ "$a" = "$k" ]; then nodes_of "$k"; found=1; break; fi
    done
    [ -n "$found" ] && continue
    all_nodes | grep -qx -- "$a" || die "unknown node '$a' (see: cluster.sh status)"
    echo "$a"
  done
}

redis_port() { local i; i=$(index_of "$1"); echo "$PARLEY_CLUSTER_REDIS_PORTS" | awk -v i="$i" '{print $i}'; }

# Overrides of stack.sh's per-service functions.
pidfile() { echo "$PARLEY_CLUSTER_DIR/$1/$1.pid"; }
logfile() { echo "$PARLEY_CLUSTER_DIR/$1/$1.log"; }

expected_cmd() {
  case "$(kind_of "$1")" in
    nats) echo nats-server ;;
    cassandra) echo CassandraDaemon ;;
    redis|sentinel) echo redis-server ;;
    edge|delivery|api) echo parleyd ;;
    haproxy) echo haproxy ;;
  esac
}

service_host() {
  case "$(kind_of "$1")" in
    cassandra) echo "127.0.0.$(index_of "$1")" ;;
    *) echo 127.0.0.1 ;;
  esac
}

service_port() {
  local i; i=$(index_of "$1")
  case "$(kind_of "$1")" in
    nats) echo $((PARLEY_CLUSTER_NATS_BASE + i)) ;;
    cassandra) echo "$PARLEY_CLUSTER_CASSANDRA_PORT" ;;
    redis) redis_port "$1" ;;
    sentinel) echo $((PARLEY_CLUSTER_SENTINEL_BASE + i)) ;;
    edge) echo $((PARLEY_CLUSTER_EDGE_BASE + i)) ;;
    api) echo $((PARLEY_CLUSTER_API_BASE + i)) ;;
    delivery) admin_port "$1" ;;
    haproxy) echo "$PARLEY_CLUSTER_LB_PORT" ;;
  esac
}

admin_port() {
  local i; i=$(index_of "$1")
  case "$(kind_of "$1")" in
    edge) echo $((PARLEY_CLUSTER_ADMIN_BASE + i)) ;;
    api) echo $((PARLEY_CLUSTER_ADMIN_BASE + 10 + i)) ;;
    delivery) echo $((PARLEY_CLUSTER_ADMIN_BASE + 20 + i)) ;;
  esac
}

monitor_port() { echo $((PARLEY_CLUSTER_NATS_MONITOR_BASE + $(index_of "$1"))); }

# health_url is where a node says it is ready (empty for Redis and Cassandra, checked otherwise).
health_url() {
  case "$(kind_of "$1")" in
    # The server and the meta group, not every stream: a stream is Parley's to wait for (an
    # in-memory replicated bucket takes a while to be current again after every server restarted).
    nats) echo "http://127.0.0.1:$(monitor_port "$1")/healthz?js-server-only=true" ;;
    edge|delivery|api) echo "http://127.0.0.1:$(admin_port "$1")/readyz" ;;
    haproxy) echo "http://127.0.0.1:$PARLEY_CLUSTER_LB_STATS_PORT/" ;;
  esac
}

ready() {
  local host port
  host=$(service_host "$1") port=$(service_port "$1")
  case "$(kind_of "$1")" in
    cassandra) grep -q "Starting listening for CQL clients" "$(logfile "$1")" 2>/dev/null && port_open "$port" "$host" ;;
    redis) [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] ;;
    sentinel) [ -n "$(redis-cli -h 127.0.0.1 -p "$port" sentinel get-master-addr-by-name "$PARLEY_CLUSTER_REDIS_MASTER" 2>/dev/null)" ] ;;
    *) curl -fsS -m 2 -o /dev/null "$(health_url "$1")" 2>/dev/null ;;
  esac
}

start_timeout() {
  case "$(kind_of "$1")" in
    cassandra) echo "$PARLEY_CLUSTER_CASSANDRA_TIMEOUT" ;;
    *) echo "$PARLEY_CLUSTER_START_TIMEOUT" ;;
  esac
}

stop_grace() { case "$(kind_of "$1")" in cassandra) echo 60 ;; edge) echo 40 ;; *) echo 20 ;; esac; }

# ---- the settings parleyd runs with ---------------------------------------------------------

join_by() { local IFS=$1; shift; echo "$*"; }

nats_urls() {
  local n out=()
  for n in $(nodes_of nats); do out+=("nats://127.0.0.1:$(service_port "$n")"); done
  join_by , "${out[@]}"
}

cassandra_hosts() {
  local n out=()
  for n in $(nodes_of cassandra); do out+=("$(service_host "$n"):$PARLEY_CLUSTER_CASSANDRA_PORT"); done
  join_by , "${out[@]}"
}

sentinel_addrs() {
  local n out=()
  for n in $(nodes_of sentinel); do out+=("127.0.0.1:$(service_port "$n")"); done
  join_by , "${out[@]}"
}

secret_file() { echo "$PARLEY_CLUSTER_DIR/hs256-secret"; }
admin_token_file() { echo "$PARLEY_CLUSTER_DIR/admin-token"; }

make_secrets() {
  mkdir -p "$PARLEY_CLUSTER_DIR"
  local f
  for f in "$(secret_file)" "$(admin_token_file)"; do
    [ -s "$f" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
  done
}

# parleyd_env exports what every parleyd of the cluster reads (cmd/parleyd: each flag has a
# PARLEY_* variable).
parleyd_env() {
  export PARLEY_NATS_URL; PARLEY_NATS_URL=$(nats_urls)
  export PARLEY_CASSANDRA_HOSTS; PARLEY_CASSANDRA_HOSTS=$(cassandra_hosts)
  export PARLEY_CASSANDRA_KEYSPACE=$PARLEY_CLUSTER_KEYSPACE
  export PARLEY_CASSANDRA_LOCAL_DC=$PARLEY_CLUSTER_CASSANDRA_DC
  export PARLEY_CASSANDRA_CONSISTENCY=LOCAL_QUORUM
  export PARLEY_CASSANDRA_REPLICATION="NetworkTopologyStrategy:$PARLEY_CLUSTER_CASSANDRA_DC=$PARLEY_CLUSTER_CASSANDRA_RF"
  export PARLEY_REDIS_SENTINELS; PARLEY_REDIS_SENTINELS=$(sentinel_addrs)
  export PARLEY_REDIS_MASTER_NAME=$PARLEY_CLUSTER_REDIS_MASTER
  unset PARLEY_REDIS_ADDR
  export PARLEY_NATS_REPLICAS=$PARLEY_CLUSTER_NATS_REPLICAS
  export PARLEY_DELIVERY_PARTITIONS=$PARLEY_CLUSTER_PARTITIONS
  # HAProxy sends a PROXY protocol v2 header on every connection to an edge or an api, so
  # their per-IP limits and security events see the client, not the balancer.
  export PARLEY_EDGE_TRUSTED_PROXIES=127.0.0.1
  export PARLEY_AUTH_HS256_SECRET; PARLEY_AUTH_HS256_SECRET=$(cat "$(secret_file)")
  export PARLEY_ADMIN_TOKEN_FILE; PARLEY_ADMIN_TOKEN_FILE=$(admin_token_file)
}

# ---- launchers (each execs its node in the foreground; start_service runs it under setsid) ---

launch() {
  local name=$1
  case "$(kind_of "$name")" in
    nats) launch_cluster_nats "$name" ;;
    cassandra) launch_cluster_cassandra "$name" ;;
    redis) launch_cluster_redis "$name" ;;
    sentinel) launch_cluster_sentinel "$name" ;;
    edge|delivery|api) launch_cluster_parleyd "$name" ;;
    haproxy) launch_cluster_haproxy ;;
    *) die "no launcher for $name" ;;
  esac
}

launch_cluster_nats() {
  local name=$1 dir="$PARLEY_CLUSTER_DIR/$1" n routes=()
  for n in $(nodes_of nats); do
    routes+=("nats://127.0.0.1:$((PARLEY_CLUSTER_NATS_ROUTE_BASE + $(index_of "$n")))")
  done
  cat >"$dir/nats.conf" <<EOF
# Written by deploy/cluster/cluster.sh; change deploy/cluster/env.sh instead.
server_name: parley-$name
listen: 127.0.0.1:$(service_port "$name")
http: 127.0.0.1:$(monitor_port "$name")
max_payload: 1MB
cluster {
  name: parley
  listen: 127.0.0.1:$((PARLEY_CLUSTER_NATS_ROUTE_BASE + $(index_of "$name")))
  routes: [$(join_by , "${routes[@]}")]
}
jetstream {
  store_dir: "$dir/jetstream"
  max_memory_store: 256MB
  max_file_store: 8GB
  sync_interval: $PARLEY_CLUSTER_NATS_SYNC_INTERVAL
}
EOF
  exec "$(nats_bin)" -c "$dir/nats.conf"
}

# cassandra_token is node i's token of N, evenly spread over the Murmur3 ring (64-bit
# arithmetic wraps, which is what the ring does).
cassandra_token() {
  local i=$1 n=$2
  echo $((-9223372036854775807 - 1 + (i - 1) * (9223372036854775807 / n * 2)))
}

launch_cluster_cassandra() {
  local name=$1 dir="$PARLEY_CLUSTER_DIR/$1" i n seeds=()
  i=$(index_of "$name")
  for n in $(nodes_of cassandra); do seeds+=("$(service_host "$n"):$PARLEY_CLUSTER_CASSANDRA_STORAGE_PORT"); done
  mkdir -p "$dir/conf"
  printf 'dc=%s\nrack=rack1\n' "$PARLEY_CLUSTER_CASSANDRA_DC" >"$dir/conf/cassandra-rackdc.properties"
  # Every node is a seed with its own fixed token, so the nodes start together instead of
  # joining one after another (no bootstrap, no token allocation).
  cassandra_exec "$dir" "$(service_host "$name")" "$PARLEY_CLUSTER_CASSANDRA_PORT" "$PARLEY_CLUSTER_CASSANDRA_STORAGE_PORT" \
    "$PARLEY_CLUSTER_CASSANDRA_HEAP" "$(join_by , "${seeds[@]}")" "$(cassandra_token "$i" "$PARLEY_CLUSTER_CASSANDRA")" \
    GossipingPropertyFileSnitch parley-cluster true
}

# current_master asks the Sentinels which Redis is the primary now ("host port"), empty if none
# answers.
current_master() {
  local s addr
  for s in $(nodes_of sentinel); do
    addr=$(redis-cli -h 127.0.0.1 -p "$(service_port "$s")" sentinel get-master-addr-by-name "$PARLEY_CLUSTER_REDIS_MASTER" 2>/dev/null | tr '\n' ' ')
    if [ -n "${addr// /}" ]; then echo "$addr"; return 0; fi
  done
}

launch_cluster_redis() {
  local name=$1 dir="$PARLEY_CLUSTER_DIR/$1" port master first
  port=$(service_port "$name")
  first=$(redis_port redis-1)
  # A returning node rejoins as a replica of whichever node the Sentinels call the primary; on
  # the first start redis-1 is the primary. The append-only file keeps a restarted node's data.
  master=$(current_master)
  local replicaof=()
  if [ -n "$master" ]; then
    read -r mhost mport <<<"$master"
    [ "$mport" = "$port" ] || replicaof=(--replicaof "$mhost" "$mport")
  elif [ "$port" != "$first" ]; then
    replicaof=(--replicaof 127.0.0.1 "$first")
  fi
  exec redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --save '' --appendonly yes --appendfsync everysec --dir "$dir" --daemonize no --logfile '' \
    "${replicaof[@]}"
}

launch_cluster_sentinel() {
  local name=$1 dir="$PARLEY_CLUSTER_DIR/$1" conf
  conf="$dir/sentinel.conf"
  # The Sentinel rewrites its file with what it learns (the current primary, the other
  # Sentinels); it is written only once.
  if [ ! -s "$conf" ]; then
    cat >"$conf" <<EOF
port $(service_port "$name")
bind 127.0.0.1
dir "$dir"
sentinel monitor $PARLEY_CLUSTER_REDIS_MASTER 127.0.0.1 $(redis_port redis-1) 2
sentinel down-after-milliseconds $PARLEY_CLUSTER_REDIS_MASTER $PARLEY_CLUSTER_SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $PARLEY_CLUSTER_REDIS_MASTER 10000
sentinel parallel-syncs $PARLEY_CLUSTER_REDIS_MASTER 1
EOF
  fi
  exec redis-server "$conf" --sentinel
}

launch_cluster_parleyd() {
  local name=$1 kind args=()
  kind=$(kind_of "$name")
  parleyd_env
  export PARLEY_CASSANDRA_MIGRATE=false
  args=(run --roles="$kind" --admin-addr="127.0.0.1:$(admin_port "$name")")
  case "$kind" in
    edge|api) args+=(--listen-addr="127.0.0.1:$(service_port "$name")") ;;
  esac
  exec "$PARLEY_CLUSTER_PARLEYD" "${args[@]}"
}

haproxy_servers() {
  local kind=$1 n
  for n in $(nodes_of "$kind"); do
    # inter 1s fall 1: a node whose /readyz says 503 (a draining edge) leaves rotation within a
    # second (the edge keeps serving for --edge-drain-delay, 2 s, before it drains); rise 2: it
    # returns after two good checks. send-proxy-v2: the client's address, in a PROXY header
    # (the checks, on the admin port, send none).
    echo "  server $n 127.0.0.1:$(service_port "$n") send-proxy-v2 check port $(admin_port "$n") inter 1s fall 1 rise 2"
  done
}

launch_cluster_haproxy() {
  local dir="$PARLEY_CLUSTER_DIR/haproxy" maxconn
  # Each proxied connection holds two descriptors (client and server side).
  maxconn=$(( $(ulimit -n) / 2 - 100 ))
  cat >"$dir/haproxy.cfg" <<EOF
# Written by deploy/cluster/cluster.sh; change deploy/cluster/env.sh instead.
global
  maxconn $maxconn
  log stderr format raw local0 notice

defaults
  mode http
  log global
  option dontlognull
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # An upgraded WebSocket is a tunnel: it lives as long as the edge's heartbeats keep it busy.
  timeout tunnel 1h
  timeout http-request 10s
  timeout queue 5s
  option httpchk GET /readyz
  http-check expect status 200

frontend parley
  bind 127.0.0.1:$PARLEY_CLUSTER_LB_PORT
  acl websocket path /v1/ws
  use_backend edges if websocket
  default_backend apis

backend edges
  # Connections last long: the edge with the fewest takes the next one.
  balance leastconn
$(haproxy_servers edge)

backend apis
  balance roundrobin
  option redispatch
  retries 2
$(haproxy_servers api)

listen stats
  bind 127.0.0.1:$PARLEY_CLUSTER_LB_STATS_PORT
  stats enable
  stats uri /
  stats refresh 5s
EOF
  exec haproxy -db -f "$dir/haproxy.cfg"
}

# ---- commands -------------------------------------------------------------------------------

install_haproxy() {
  command -v haproxy >/dev/null 2>&1 || apt_install haproxy
}

cluster_deps() {
  install_tools
  install_haproxy
  install_nats
  install_cassandra
  if [ ! -x "$PARLEY_CLUSTER_PARLEYD" ]; then
    log "building $PARLEY_CLUSTER_PARLEYD"
    (cd "$PARLEY_ROOT" && go build -o "$PARLEY_CLUSTER_PARLEYD" ./cmd/parleyd)
  fi
}

# wait_meta_group waits until a NATS server sees a meta leader with every other server current
# (each server's /healthz is ready before the JetStream cluster has formed).
wait_meta_group() {
  local n want=$((PARLEY_CLUSTER_NATS - 1)) i jsz
  [ "$want" -gt 0 ] || return 0
  for ((i = 0; i < PARLEY_CLUSTER_START_TIMEOUT * 2; i++)); do
    for n in $(nodes_of nats); do
      # Only the meta leader lists the group's replicas; "current": true once per current one.
      jsz=$(curl -fsS -m 2 "http://127.0.0.1:$(monitor_port "$n")/jsz" 2>/dev/null || true)
      if [ "$(echo "$jsz" | awk '/"meta_cluster"/ {m = 1} m && /"current": true/ {c++} END {print c + 0}')" -ge "$want" ]; then
        return 0
      fi
    done
    sleep 0.5
  done
  return 1
}

# start_group starts the nodes together and waits for all; started ones go to $STARTED_FILE.
start_group() {
  local n pids=() outs=() rc=0 i
  for n in "$@"; do
    local out; out=$(mktemp)
    outs+=("$out")
    mkdir -p "$PARLEY_CLUSTER_DIR/$n"
    start_service "$n" >"$out" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || rc=1
    if [ -n "${STARTED_FILE:-}" ]; then cat "${outs[$i]}" >>"$STARTED_FILE"; fi
    rm -f "${outs[$i]}"
  done
  return $rc
}

migrate() {
  log "applying the schema (keyspace $PARLEY_CLUSTER_KEYSPACE, $PARLEY_CASSANDRA_REPLICATION_SHOWN)"
  (parleyd_env; "$PARLEY_CLUSTER_PARLEYD" migrate) >>"$PARLEY_CLUSTER_DIR/migrate.log" 2>&1 \
    || { tail -n 20 "$PARLEY_CLUSTER_DIR/migrate.log" >&2; die "parleyd migrate failed (log: $PARLEY_CLUSTER_DIR/migrate.log)"; }
}

cmd_cluster_up() {
  local nodes=() whole=
  while [ $# -gt 0 ]; do
    case "$1" in
      --started-file) STARTED_FILE=$2; shift 2 ;;
      *) nodes+=("$1"); shift ;;
    esac
  done
  [ ${#nodes[@]} -gt 0 ] || whole=1
  local t0=$SECONDS
  cluster_deps
  make_secrets
  local tier want
  PARLEY_CASSANDRA_REPLICATION_SHOWN="NetworkTopologyStrategy:$PARLEY_CLUSTER_CASSANDRA_DC=$PARLEY_CLUSTER_CASSANDRA_RF"
  for tier in "${TIERS[@]}"; do
    if [ -n "$whole" ]; then
      mapfile -t want < <(nodes_of "$tier")
    else
      mapfile -t want < <(expand "${nodes[@]}" | while read -r n; do [ "$(kind_of "$n")" = "$tier" ] && echo "$n"; done)
    fi
    [ ${#want[@]} -gt 0 ] || continue
    local t1=$SECONDS
    # The first parleyd of each role creates its streams and buckets alone: on a fresh NATS
    # 2.12.1 cluster, two processes creating the same stream or bucket at the same moment
    # have been seen to wait for an answer until their start-up timeout (the apis and the
    # ingest stream, the edges and their rebalance bucket).
    if [[ "$tier" =~ ^(api|delivery|edge)$ ]] && [ ${#want[@]} -gt 1 ] && ! service_pid "${want[0]}" >/dev/null; then
      start_group "${want[0]}" || die "could not start: ${want[0]} (logs under ${PARLEY_CLUSTER_DIR#"$PARLEY_ROOT"/})"
    fi
    start_group "${want[@]}" || die "could not start: ${want[*]} (logs under ${PARLEY_CLUSTER_DIR#"$PARLEY_ROOT"/})"
    if [ "$tier" = nats ]; then wait_meta_group || die "the NATS servers did not form one JetStream cluster (logs under ${PARLEY_CLUSTER_DIR#"$PARLEY_ROOT"/})"; fi
    log "$tier ready ($((SECONDS - t1))s)"
    # The schema goes in once Cassandra is up, before any parleyd starts (they do not migrate).
    if [ "$tier" = cassandra ] && [ -n "$whole" ]; then migrate; fi
  done
  [ -n "$whole" ] || return 0
  local token
  token=$(PARLEY_AUTH_HS256_SECRET=$(cat "$(secret_file)") "$PARLEY_CLUSTER_PARLEYD" token --user demo --device laptop --ttl 24h)
  cat <<EOF

Parley cluster is up ($((SECONDS - t0))s). 'make cluster-status' shows it, 'make cluster-down' stops it.

  url        http://127.0.0.1:$PARLEY_CLUSTER_LB_PORT   (HAProxy: WebSocket ws://127.0.0.1:$PARLEY_CLUSTER_LB_PORT/v1/ws, REST /v1/...)
  lb stats   http://127.0.0.1:$PARLEY_CLUSTER_LB_STATS_PORT/
  nats       $(nats_urls)   (JetStream R$PARLEY_CLUSTER_NATS_REPLICAS, sync_interval $PARLEY_CLUSTER_NATS_SYNC_INTERVAL)
  cassandra  $(cassandra_hosts)   ($PARLEY_CASSANDRA_REPLICATION_SHOWN, LOCAL_QUORUM)
  redis      sentinels $(sentinel_addrs), master name $PARLEY_CLUSTER_REDIS_MASTER

  demo token (user "demo", device "laptop", 24h):
  $token

  more tokens: PARLEY_AUTH_HS256_SECRET=\$(cat ${PARLEY_CLUSTER_DIR#"$PARLEY_ROOT"/}/hs256-secret) $PARLEY_CLUSTER_PARLEYD token --user NAME
EOF
}

cmd_cluster_down() {
  local nodes=() tier i
  if [ $# -gt 0 ] && [ "$1" = --from-file ]; then
    [ -s "$2" ] || { log "nothing to stop"; return 0; }
    mapfile -t nodes <"$2"
  elif [ $# -gt 0 ]; then
    mapfile -t nodes < <(expand "$@")
  else
    mapfile -t nodes < <(all_nodes)
  fi
  for ((i = ${#TIERS[@]} - 1; i >= 0; i--)); do
    tier=${TIERS[$i]}
    local pids=() n
    for n in "${nodes[@]}"; do
      [ "$(kind_of "$n")" = "$tier" ] || continue
      stop_service "$n" &
      pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || true; done
  done
}

cmd_cluster_status() {
  local n pid host port state
  for n in $(all_nodes); do
    host=$(service_host "$n") port=$(service_port "$n")
    if pid=$(service_pid "$n"); then
      if ready "$n"; then state=ready; else state="not ready"; fi
      printf '%-12s running  pid %-7s %s:%s %s\n' "$n" "$pid" "$host" "$port" "$state"
    else
      printf '%-12s stopped\n' "$n"
    fi
  done
  local master; master=$(current_master)
  [ -z "$master" ] || printf 'redis primary (per the Sentinels): %s\n' "$master"
  local stats
  if stats=$(curl -fsS -m 2 "http://127.0.0.1:$PARLEY_CLUSTER_LB_STATS_PORT/;csv" 2>/dev/null); then
    printf 'haproxy: %s\n' "$(echo "$stats" | awk -F, '$1 ~ /^(edges|apis)$/ && $2 != "BACKEND" && $2 != "FRONTEND" {printf "%s/%s %s, ", $1, $2, $18}' | sed 's/, $//')"
  fi
  local m
  for n in $(nodes_of nats); do
    if m=$(curl -fsS -m 2 "http://127.0.0.1:$(monitor_port "$n")/jsz" 2>/dev/null); then
      printf 'nats meta leader: %s\n' "$(echo "$m" | awk '/"meta_cluster"/ {in_meta = 1} in_meta && /"leader"/ {gsub(/[",]/, "", $2); print $2; exit}')"
      break
    fi
  done
}

cmd_cluster_nodes() {
  local n
  for n in $(all_nodes); do
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$(kind_of "$n")" "$(pidfile "$n")" "$(expected_cmd "$n")" \
      "$(health_url "$n")" "$(service_host "$n"):$(service_port "$n")"
  done
}

cluster_main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    deps) cluster_deps ;;
    up) cmd_cluster_up "$@" ;;
    down) cmd_cluster_down "$@" ;;
    status) cmd_cluster_status ;;
    nodes) cmd_cluster_nodes ;;
    url) echo "http://127.0.0.1:$PARLEY_CLUSTER_LB_PORT" ;;
    secret) make_secrets; cat "$(secret_file)" ;;
    env) parleyd_env; env | grep '^PARLEY_' | grep -v -e SECRET -e TOKEN | sort ;;
    clean) cmd_cluster_down; rm -rf "$PARLEY_CLUSTER_DIR"; log "removed $PARLEY_CLUSTER_DIR" ;;
    *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

if [ "${1:-}" != --source-only ]; then cluster_main "$@"; fi
