# Defaults of the local stack, sourced by stack.sh. Every value can be overridden from the
# environment; parleyd's own defaults (cmd/parleyd) and internal/teststack use the same ports, so
# changing a port here means exporting the matching PARLEY_* variable for parleyd too.
# shellcheck shell=bash

: "${PARLEY_STATE_DIR:=$PARLEY_ROOT/.parley}"
: "${PARLEY_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/parley}"

: "${PARLEY_REDIS_PORT:=16379}"
: "${PARLEY_NATS_PORT:=14222}"
: "${PARLEY_NATS_MONITOR_PORT:=18222}"
# JetStream fsync interval: "always" fsyncs every write (no acknowledged loss on power failure),
# a duration such as "2m" is NATS's default trade-off.
: "${PARLEY_NATS_SYNC_INTERVAL:=2m}"
: "${PARLEY_CASSANDRA_PORT:=19042}"
: "${PARLEY_CASSANDRA_STORAGE_PORT:=17000}"
: "${PARLEY_CASSANDRA_HEAP:=1G}"
# Cassandra's commit log sync: group (acknowledged once synced, synced every
# PARLEY_CASSANDRA_COMMITLOG_WINDOW), batch (synced before each acknowledgement) or periodic
# (acknowledged before it is synced; synced every 10 s). See docs/operations.md.
: "${PARLEY_CASSANDRA_COMMITLOG_SYNC:=group}"
: "${PARLEY_CASSANDRA_COMMITLOG_WINDOW:=10ms}"

: "${NATS_SERVER_VERSION:=v2.12.1}"
: "${CASSANDRA_VERSION:=5.0.8}"
# Seconds to wait for each service to become ready.
: "${PARLEY_REDIS_START_TIMEOUT:=20}"
: "${PARLEY_NATS_START_TIMEOUT:=30}"
: "${PARLEY_CASSANDRA_START_TIMEOUT:=240}"

# What parleyd and the integration tests (internal/teststack) read to find the stack.
export PARLEY_REDIS_ADDR="${PARLEY_REDIS_ADDR:-127.0.0.1:$PARLEY_REDIS_PORT}"
export PARLEY_NATS_URL="${PARLEY_NATS_URL:-nats://127.0.0.1:$PARLEY_NATS_PORT}"
export PARLEY_CASSANDRA_HOSTS="${PARLEY_CASSANDRA_HOSTS:-127.0.0.1:$PARLEY_CASSANDRA_PORT}"
