// Package schema owns Parley's Cassandra schema: versioned CQL migrations embedded in the
// binary (migrations/NNNN_name.cql), the keyspace with its configurable replication, and the
// runner that applies pending migrations idempotently and records them in schema_migrations.
//
// A binary refuses to run against a keyspace whose schema is newer than the migrations it
// carries, and, when it is not allowed to migrate, against one that is older.
package schema
