# Defaults of the local cluster (deploy/cluster/cluster.sh). Every value can be overridden from
# the environment. Everything listens on loopback; the Cassandra nodes take 127.0.0.1, 127.0.0.2
# and 127.0.0.3 (Linux routes all of 127.0.0.0/8 to the loopback interface) with the same ports.
# Versions, the download cache and the Cassandra commit log settings come from
# deploy/local/env.sh. Ports stay below 32768, out of the kernel's ephemeral range, so a port
# of a node that is down is never taken by an outgoing connection.
# shellcheck shell=bash

: "${PARLEY_CLUSTER_DIR:=${PARLEY_STATE_DIR:-$PARLEY_ROOT/.parley}/cluster}"

# NATS: PARLEY_CLUSTER_NATS nodes; node i listens on BASE+i (clients), ROUTE_BASE+i (cluster
# routes) and MONITOR_BASE+i (HTTP monitoring).
: "${PARLEY_CLUSTER_NATS:=3}"
: "${PARLEY_CLUSTER_NATS_BASE:=25220}"
: "${PARLEY_CLUSTER_NATS_ROUTE_BASE:=25230}"
: "${PARLEY_CLUSTER_NATS_MONITOR_BASE:=25240}"
# Replicas of every JetStream stream and KV bucket Parley creates (at most the node count).
: "${PARLEY_CLUSTER_NATS_REPLICAS:=3}"
# Partitions of the delivery pipeline. Each has three consumers (sequencer, projector,
# fan-out), each a replicated group that every delivery worker pulls from, so their idle cost
# grows with partitions x workers (docs/operations.md, "Capacity"); 16 keep 3 NATS servers on
# this 2-core box mostly idle. Fixed once the ingest stream holds messages.
: "${PARLEY_CLUSTER_PARTITIONS:=16}"
# JetStream's fsync: "always" syncs every write before it is acknowledged (an acknowledged
# message survives a power failure of every node); a duration (NATS's default is 2m) syncs
# that often, so a coordinated power failure can lose what was acknowledged since the last
# sync (docs/operations.md, "Durability of the cluster").
: "${PARLEY_CLUSTER_NATS_SYNC_INTERVAL:=always}"

# Cassandra: node i listens on 127.0.0.i, all on the same ports.
: "${PARLEY_CLUSTER_CASSANDRA:=3}"
: "${PARLEY_CLUSTER_CASSANDRA_PORT:=25042}"
: "${PARLEY_CLUSTER_CASSANDRA_STORAGE_PORT:=25700}"
: "${PARLEY_CLUSTER_CASSANDRA_HEAP:=512M}"
: "${PARLEY_CLUSTER_CASSANDRA_DC:=dc1}"
: "${PARLEY_CLUSTER_CASSANDRA_RF:=3}"

# Redis: a primary (first port) and its replica (second), watched by PARLEY_CLUSTER_SENTINELS
# Sentinels on SENTINEL_BASE+i.
: "${PARLEY_CLUSTER_REDIS_PORTS:=25379 25380}"
: "${PARLEY_CLUSTER_SENTINELS:=3}"
: "${PARLEY_CLUSTER_SENTINEL_BASE:=25380}"
: "${PARLEY_CLUSTER_REDIS_MASTER:=parley}"
# How long a primary may be silent before the Sentinels agree it is down and fail over.
: "${PARLEY_CLUSTER_SENTINEL_DOWN_AFTER_MS:=2000}"

# parleyd: PARLEY_CLUSTER_EDGES edges, _DELIVERIES delivery workers, _APIS api processes.
# Edge i listens on EDGE_BASE+i (WebSocket) and ADMIN_BASE+i (health, metrics); api i on
# API_BASE+i and ADMIN_BASE+10+i; delivery i on ADMIN_BASE+20+i (admin only).
: "${PARLEY_CLUSTER_EDGES:=2}"
: "${PARLEY_CLUSTER_DELIVERIES:=2}"
: "${PARLEY_CLUSTER_APIS:=2}"
: "${PARLEY_CLUSTER_EDGE_BASE:=25800}"
: "${PARLEY_CLUSTER_API_BASE:=25810}"
: "${PARLEY_CLUSTER_ADMIN_BASE:=25900}"
: "${PARLEY_CLUSTER_KEYSPACE:=parley}"
# parleyd binary; cluster.sh builds it there when it is missing.
: "${PARLEY_CLUSTER_PARLEYD:=$PARLEY_ROOT/bin/parleyd}"

# HAProxy: the one URL clients use (WebSocket on /v1/ws, REST on the rest), and its stats page.
: "${PARLEY_CLUSTER_LB_PORT:=25080}"
: "${PARLEY_CLUSTER_LB_STATS_PORT:=25081}"

# Seconds to wait for each kind of node to become ready.
: "${PARLEY_CLUSTER_CASSANDRA_TIMEOUT:=300}"
: "${PARLEY_CLUSTER_START_TIMEOUT:=60}"
