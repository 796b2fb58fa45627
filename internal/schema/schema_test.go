package schema_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/schema"
	"github.com/parleyhq/parley/internal/teststack"
)

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("Migrations = %d files starting at %v; want 1, 2, ...", len(ms), ms)
	}
}

func TestParseReplication(t *testing.T) {
	good := map[string]schema.Replication{
		"SimpleStrategy:1": {Strategy: "SimpleStrategy", Factor: 1},
		"NetworkTopologyStrategy:dc1=3,dc-2=2": {Strategy: "NetworkTopologyStrategy",
			DCs: map[string]int{"dc1": 3, "dc-2": 2}},
	}
	for in, want := range good {
		got, err := schema.ParseReplication(in)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ParseReplication(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "SimpleStrategy", "SimpleStrategy:0", "SimpleStrategy:x",
		"NetworkTopologyStrategy:dc1", "NetworkTopologyStrategy:d'c=3", "EverywhereStrategy:1"} {
		if _, err := schema.ParseReplication(in); err == nil {
			t.Errorf("ParseReplication(%q) accepted", in)
		}
	}
}

// TestMigrateFreshKeyspace migrates a keyspace of its own, then checks idempotence, the
// version check and the refusal of a newer or edited schema.
func TestMigrateFreshKeyspace(t *testing.T) {
	ks := strings.ToLower(teststack.ID(t))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := backend.NewCassandra(teststack.CassandraConfig(), prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := schema.Config{Keyspace: ks, Replication: schema.Replication{Strategy: "SimpleStrategy", Factor: 1}}
	t.Cleanup(func() {
		s, err := c.Open(context.Background(), "")
		if err == nil {
			_ = s.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
			s.Close()
		}
	})

	ms, _ := schema.Migrations()
	res, err := schema.Migrate(ctx, c.Open, cfg, logger)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if res.From != 0 || res.To != len(ms) || len(res.Applied) != len(ms) {
		t.Fatalf("first Migrate = %+v; want 0 -> %d with all applied", res, len(ms))
	}
	res, err = schema.Migrate(ctx, c.Open, cfg, logger)
	if err != nil || len(res.Applied) != 0 || res.From != len(ms) {
		t.Fatalf("second Migrate = %+v, %v; want nothing applied", res, err)
	}

	s, err := c.Open(ctx, ks)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := schema.Check(ctx, s); err != nil {
		t.Fatalf("Check after Migrate: %v", err)
	}
	// The tables of the migrations exist and take writes.
	if err := s.Query(`INSERT INTO messages (conversation_id, bucket, seq, body) VALUES (?, 0, 1, 'hi') IF NOT EXISTS`,
		gocql.MustRandomUUID()).ExecContext(ctx); err != nil {
		t.Fatalf("insert into messages: %v", err)
	}

	// An edited migration is refused.
	exec(t, s, `UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1`)
	if err := schema.Check(ctx, s); !errors.Is(err, schema.ErrChecksum) {
		t.Errorf("Check with edited migration = %v; want ErrChecksum", err)
	}
	exec(t, s, `UPDATE schema_migrations SET checksum = ? WHERE version = 1`, ms[0].Checksum)

	// A schema migrated by a newer binary is refused by Check and by Migrate.
	exec(t, s, `INSERT INTO schema_migrations (version, name, checksum) VALUES (?, 'from_the_future', 'x')`, len(ms)+1)
	if err := schema.Check(ctx, s); !errors.Is(err, schema.ErrSchemaNewer) {
		t.Errorf("Check with newer schema = %v; want ErrSchemaNewer", err)
	}
	if _, err := schema.Migrate(ctx, c.Open, cfg, logger); !errors.Is(err, schema.ErrSchemaNewer) {
		t.Errorf("Migrate with newer schema = %v; want ErrSchemaNewer", err)
	}

	// A schema behind the binary is reported as such.
	exec(t, s, `DELETE FROM schema_migrations WHERE version IN ?`, []int{len(ms), len(ms) + 1})
	if err := schema.Check(ctx, s); !errors.Is(err, schema.ErrSchemaBehind) {
		t.Errorf("Check with pending migrations = %v; want ErrSchemaBehind", err)
	}
}

func exec(t *testing.T, s *gocql.Session, stmt string, args ...any) {
	t.Helper()
	if err := s.Query(stmt, args...).Exec(); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// Several processes migrating one keyspace at once (parleyd instances starting together)
// serialise on the lock: every migration is applied exactly once and all of them succeed.
func TestConcurrentMigrators(t *testing.T) {
	ks := strings.ToLower(teststack.ID(t))
	logger := teststack.Logger(t) // a failure shows why a migrator waited
	c, err := backend.NewCassandra(teststack.CassandraConfig(), prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s, err := c.Open(context.Background(), ""); err == nil {
			_ = s.Query("DROP KEYSPACE IF EXISTS " + ks).Exec()
			s.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := schema.Config{Keyspace: ks, Replication: schema.Replication{Strategy: "SimpleStrategy", Factor: 1}}
	type out struct {
		res schema.Result
		err error
	}
	results := make(chan out, 3)
	for i := 0; i < 3; i++ {
		go func() {
			res, err := schema.Migrate(ctx, c.Open, cfg, logger)
			results <- out{res, err}
		}()
	}
	ms, _ := schema.Migrations()
	applied := 0
	for i := 0; i < 3; i++ {
		o := <-results
		if o.err != nil {
			t.Fatalf("concurrent Migrate: %v", o.err)
		}
		applied += len(o.res.Applied)
	}
	if applied != len(ms) {
		t.Errorf("%d migrations applied across 3 migrators; want each of the %d once", applied, len(ms))
	}
}
