#!/usr/bin/env bash
# bench-chat.sh runs one end-to-end chat load test against a fresh parleyd (all roles) on the
# local stack (make up) and prints one line of JSON: the load test's verdict and latencies,
# and the CPU seconds parleyd, nats-server and Cassandra spent during the run, per 1,000
# delivered messages. Used for the figures in docs/benchmarks.md (alternate builds A and B).
#
#   deploy/local/bench-chat.sh PARLEYD LOADTEST RATE DURATION [OUTAGE_AT OUTAGE_FOR]
#
# With OUTAGE_AT and OUTAGE_FOR (seconds), Cassandra is stopped OUTAGE_AT seconds after the load
# test starts sending (its conversations are then active) for OUTAGE_FOR seconds, and the line also says how long after Cassandra was back the
# projection had caught up (parley_delivery_projection_pending summed to 0).
set -euo pipefail
PARLEYD=$1 LOADTEST=$2 RATE=$3 DURATION=$4 OUTAGE_AT=${5:-} OUTAGE_FOR=${6:-}
PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=env.sh
source "$PARLEY_ROOT/deploy/local/env.sh"
STACK="$PARLEY_ROOT/deploy/local/stack.sh"

id=B$(date +%s%N)
out=$(mktemp -d)
export PARLEY_AUTH_HS256_SECRET=bench-secret-0123456789abcdef0123456789 PARLEY_LOG_LEVEL=warn
export PARLEY_DELIVERY_STREAM=$id PARLEY_DELIVERY_SUBJECT_PREFIX="bench.$id."
export PARLEY_LISTEN_ADDR=127.0.0.1:18480 PARLEY_ADMIN_ADDR=127.0.0.1:18481 PARLEY_EDGE_MAX_CONNS_PER_IP=6000
"$PARLEYD" run --roles=all >"$out/parleyd.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] && echo "kept $out" >&2 || rm -rf "$out"' EXIT
for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "http://$PARLEY_ADMIN_ADDR/readyz" 2>/dev/null && break
  sleep 0.5
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cass=$(cat "$PARLEY_STATE_DIR/cassandra/cassandra.pid") nats=$(cat "$PARLEY_STATE_DIR/nats/nats.pid")
p0=$(ticks "$pid") n0=$(ticks "$nats") c0=$(ticks "$cass")
caught=""
if [ -n "$OUTAGE_AT" ]; then
  (
    until grep -q 'messages/s for' "$out/chat.out" 2>/dev/null; do sleep 0.2; done
    sleep "$OUTAGE_AT"
    "$STACK" down cassandra >/dev/null 2>&1
    sleep "$OUTAGE_FOR"
    "$STACK" up cassandra >/dev/null 2>&1
    back=$(date +%s.%N)
    for _ in $(seq 1 1200); do
      behind=$(curl -fsS "http://$PARLEY_ADMIN_ADDR/metrics" 2>/dev/null | awk '
        /^parley_delivery_messages_total\{outcome="sequenced"\}/ {s = $2}
        /^parley_delivery_projected_total\{outcome="projected"\}/ {p = $2}
        END {print (p >= s) ? 0 : s - p}')
      if [ "$behind" = 0 ]; then
        echo "$(echo "$(date +%s.%N) - $back" | bc)" >"$out/caught"
        break
      fi
      sleep 0.1
    done
  ) &
fi
"$LOADTEST" chat --users 200 --rate "$RATE" --duration "${DURATION}s" --json "$out/chat.json" >"$out/chat.out" 2>&1 || true
wait_for_outage=0
while [ -n "$OUTAGE_AT" ] && [ ! -f "$out/caught" ] && [ $wait_for_outage -lt 120 ]; do sleep 1; wait_for_outage=$((wait_for_outage + 1)); done
[ -f "$out/caught" ] && caught=$(cat "$out/caught")
p1=$(ticks "$pid") n1=$(ticks "$nats") c1=$(ticks "$cass" 2>/dev/null || echo "$c0")
hz=$(getconf CLK_TCK)
python3 - "$out/chat.json" "$hz" "$((p1 - p0))" "$((n1 - n0))" "$((c1 - c0))" "$caught" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
hz = float(sys.argv[2]); p, n, c = (int(x) / hz for x in sys.argv[3:6])
v = r
delivered = max(1, v.get("delivered", 0))
out = {k: v.get(k) for k in ("sent", "accepted", "delivered", "undelivered", "duplicated", "reordered", "phantom",
                             "accepted_per_sec", "accepted_p99_ms", "delivered_p50_ms", "delivered_p99_ms", "delivered_max_ms")}
out.update({"parleyd_cpu_s": round(p, 2), "nats_cpu_s": round(n, 2), "cassandra_cpu_s": round(c, 2),
            "cpu_ms_per_delivered": round((p + n + c) * 1000 / delivered, 3)})
if sys.argv[6]:
    out["projection_caught_up_s_after_return"] = round(float(sys.argv[6]), 1)
print(json.dumps(out))
EOF
