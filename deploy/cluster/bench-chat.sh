#!/usr/bin/env bash
# bench-chat.sh runs one end-to-end chat load test against the running local cluster (make
# cluster-up), through HAProxy, and prints one line of JSON: the load test's verdict and
# latencies, and the CPU seconds each tier spent during the run (NATS, Cassandra, parleyd,
# Redis with its Sentinels, HAProxy), in all and per 1,000 delivered messages. With
# deploy/local/bench-chat.sh on the single-node stack it gives the cost of replication
# (docs/benchmarks.md).
#
#   deploy/cluster/bench-chat.sh LOADTEST RATE DURATION [USERS]
set -euo pipefail
LOADTEST=$1 RATE=$2 DURATION=$3 USERS=${4:-200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$HERE/cluster.sh"

# tier -> PIDs, from the cluster's own list (name, kind, PID file, command word, ...).
declare -A pids
while IFS=$'\t' read -r _ kind pidfile word _ _; do
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$word" \
    || { echo "bench-chat: the cluster is not fully up ($pidfile); run make cluster-up" >&2; exit 1; }
  case "$kind" in
    edge|delivery|api) kind=parleyd ;;
    sentinel) kind=redis ;;
  esac
  pids[$kind]="${pids[$kind]:-} $pid"
done < <("$CLUSTER" nodes)

ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
declare -A before
for k in "${!pids[@]}"; do before[$k]=$(ticks "${pids[$k]}"); done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
PARLEY_AUTH_HS256_SECRET=$("$CLUSTER" secret) "$LOADTEST" chat --listen-addr "$("$CLUSTER" url | sed 's|^http://||')" \
  --users "$USERS" --rate "$RATE" --duration "${DURATION}s" --json "$out/chat.json" >"$out/chat.out" 2>&1 || true
[ -s "$out/chat.json" ] || { tail -n 20 "$out/chat.out" >&2; exit 1; }

hz=$(getconf CLK_TCK)
args=()
for k in "${!pids[@]}"; do args+=("$k=$(( $(ticks "${pids[$k]}") - ${before[$k]} ))"); done
python3 - "$out/chat.json" "$hz" "${args[@]}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
hz = float(sys.argv[2])
cpu = {kv.split("=")[0]: int(kv.split("=")[1]) / hz for kv in sys.argv[3:]}
delivered = max(1, r.get("delivered", 0))
out = {k: r.get(k) for k in ("sent", "accepted", "delivered", "undelivered", "duplicated", "reordered", "phantom",
                             "accepted_per_sec", "accepted_p99_ms", "delivered_p50_ms", "delivered_p99_ms", "delivered_max_ms")}
for k in sorted(cpu):
    out[k + "_cpu_s"] = round(cpu[k], 2)
out["cpu_ms_per_delivered"] = round(sum(cpu.values()) * 1000 / delivered, 3)
print(json.dumps(out))
EOF
