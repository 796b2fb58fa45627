#!/usr/bin/env bash
# run.sh is the end of `make run`: it applies the schema, prints where everything is and a
# ready-made demo token, then runs parleyd with all roles in the foreground (Ctrl-C stops it;
# `make down` also stops it through its PID file).
#
# parleyd runs in development mode (--dev; docs/operations.md, "Development mode"): the
# browser demo at /demo/ when its build (PARLEY_DEV_DEMO_DIR, default web/demo/dist, from
# `make demo-build`) holds index.html, POST /dev/token for loopback clients, and the listener's
# own origins allowed. PARLEY_DEV=false runs it without.
set -euo pipefail

PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=env.sh
source "$PARLEY_ROOT/deploy/local/env.sh"
parleyd=${1:?usage: run.sh PATH_TO_PARLEYD}

# A development secret, made once per checkout and kept in the ignored state directory.
secret_file="$PARLEY_STATE_DIR/dev-hs256-secret"
if [ ! -s "$secret_file" ]; then
  mkdir -p "$PARLEY_STATE_DIR"
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file")
fi
export PARLEY_AUTH_HS256_SECRET=${PARLEY_AUTH_HS256_SECRET:-$(cat "$secret_file")}
admin=${PARLEY_ADMIN_ADDR:-127.0.0.1:8081}
public=${PARLEY_LISTEN_ADDR:-127.0.0.1:8080}
export PARLEY_ADMIN_ADDR=$admin PARLEY_LISTEN_ADDR=$public

# Development mode, and the demo only once it is built: without index.html there is nothing
# to serve, and parleyd would refuse the directory.
export PARLEY_DEV=${PARLEY_DEV:-true}
demo_dir=${PARLEY_DEV_DEMO_DIR:-$PARLEY_ROOT/web/demo/dist}
demo_shown=${demo_dir#"$PARLEY_ROOT"/}
if [ "$PARLEY_DEV" != true ]; then
  unset PARLEY_DEV_DEMO_DIR
  dev_lines="  development mode is off (PARLEY_DEV=$PARLEY_DEV): no /demo/, no /dev/token"
elif [ -f "$demo_dir/index.html" ]; then
  PARLEY_DEV_DEMO_DIR=$(cd "$demo_dir" && pwd)
  export PARLEY_DEV_DEMO_DIR
  dev_lines="  demo       http://$public/demo/   (the browser demo, files of $demo_shown)"
else
  unset PARLEY_DEV_DEMO_DIR
  dev_lines="  demo       not served: $demo_shown/index.html is missing (build it with 'make demo-build', then make run again)"
fi
if [ "$PARLEY_DEV" = true ]; then
  dev_lines+="
  dev token  curl -s -H 'Content-Type: application/json' -d '{\"user\":\"alice\"}' http://$public/dev/token
             (development mode, --dev: any user's token for clients on this machine, never in production)"
fi

"$parleyd" migrate
token=$("$parleyd" token --user demo --device laptop --ttl 24h)

cat <<EOF2

Parley is starting (all roles in one process). Ctrl-C stops it; 'make down' stops the stack.

$dev_lines
  websocket  ws://$public/v1/ws   (subprotocol parley.v1.json, Authorization: Bearer <token>; docs/protocol.md)
  rest api   http://$public/v1/conversations   (docs/openapi.yaml, also at http://$public/v1/openapi.json)
  health     http://$admin/healthz
  readiness  http://$admin/readyz
  metrics    http://$admin/metrics
  pprof      http://$admin/debug/pprof/
  redis      127.0.0.1:$PARLEY_REDIS_PORT   nats  127.0.0.1:$PARLEY_NATS_PORT   cassandra  127.0.0.1:$PARLEY_CASSANDRA_PORT

  demo token (user "demo", device "laptop", 24h):
  $token

  more tokens: PARLEY_AUTH_HS256_SECRET=\$(cat ${secret_file#"$PARLEY_ROOT"/}) $parleyd token --user NAME
  try it:      curl -s -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
                 -d '{"kind":"direct","with":"bob"}' http://$public/v1/conversations

EOF2

mkdir -p "$PARLEY_STATE_DIR/parleyd"
echo $$ >"$PARLEY_STATE_DIR/parleyd/parleyd.pid"
exec "$parleyd" run --roles=all
