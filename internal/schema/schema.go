package schema

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
)

//go:embed migrations/*.cql
var migrationFS embed.FS

// Sentinel errors returned (wrapped) by Check and Migrate.
var (
	// ErrSchemaNewer means the keyspace has migrations this binary does not know: it was
	// migrated by a newer Parley. Running against it could corrupt data, so Parley refuses.
	ErrSchemaNewer = errors.New("schema is newer than this binary")
	// ErrSchemaBehind means migrations are pending; run `parleyd migrate`.
	ErrSchemaBehind = errors.New("schema is behind this binary")
	// ErrChecksum means an applied migration differs from the one embedded in this binary.
	ErrChecksum = errors.New("applied migration differs from this binary's")
)

// Migration is one embedded CQL file.
type Migration struct {
	Version    int
	Name       string
	Statements []string
	Checksum   string // hex SHA-256 of the file
}

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.cql$`)

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	return loadMigrations(migrationFS, "migrations")
}

func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: want NNNN_name.cql", e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		v, _ := strconv.Atoi(m[1])
		sum := sha256.Sum256(body)
		ms = append(ms, Migration{Version: v, Name: m[2], Statements: splitStatements(string(body)), Checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration versions must be 1, 2, 3, ... without gaps: found %04d at position %d", m.Version, i+1)
		}
		if len(m.Statements) == 0 {
			return nil, fmt.Errorf("migration %04d_%s has no statements", m.Version, m.Name)
		}
	}
	return ms, nil
}

// Replication is a keyspace replication setting.
type Replication struct {
	// Strategy is SimpleStrategy or NetworkTopologyStrategy.
	Strategy string
	// Factor is the replication factor of SimpleStrategy.
	Factor int
	// DCs maps data centre to replication factor for NetworkTopologyStrategy.
	DCs map[string]int
}

// ParseReplication parses "SimpleStrategy:1" or "NetworkTopologyStrategy:dc1=3,dc2=3".
func ParseReplication(s string) (Replication, error) {
	strategy, spec, ok := strings.Cut(s, ":")
	bad := fmt.Errorf("replication %q: want SimpleStrategy:N or NetworkTopologyStrategy:dc1=N[,dc2=N...] with N in [1, 9]", s)
	if !ok {
		return Replication{}, bad
	}
	factor := func(v string) (int, bool) {
		n, err := strconv.Atoi(v)
		return n, err == nil && n >= 1 && n <= 9
	}
	switch strategy {
	case "SimpleStrategy":
		n, ok := factor(spec)
		if !ok {
			return Replication{}, bad
		}
		return Replication{Strategy: strategy, Factor: n}, nil
	case "NetworkTopologyStrategy":
		r := Replication{Strategy: strategy, DCs: map[string]int{}}
		for _, part := range strings.Split(spec, ",") {
			dc, v, ok := strings.Cut(part, "=")
			n, okN := factor(v)
			if !ok || !okN || !validDCName(dc) {
				return Replication{}, bad
			}
			r.DCs[dc] = n
		}
		return r, nil
	}
	return Replication{}, bad
}

func validDCName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// cql renders r as the map literal of CREATE KEYSPACE ... WITH replication = <map>.
func (r Replication) cql() string {
	if r.Strategy == "SimpleStrategy" {
		return fmt.Sprintf("{'class': 'SimpleStrategy', 'replication_factor': %d}", r.Factor)
	}
	dcs := make([]string, 0, len(r.DCs))
	for dc := range r.DCs {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	var b strings.Builder
	b.WriteString("{'class': 'NetworkTopologyStrategy'")
	for _, dc := range dcs {
		fmt.Fprintf(&b, ", '%s': %d", dc, r.DCs[dc])
	}
	b.WriteString("}")
	return b.String()
}

// SessionOpener opens a session bound to keyspace ("" for none).
type SessionOpener func(ctx context.Context, keyspace string) (*gocql.Session, error)

// Config says where and how to migrate.
type Config struct {
	// Keyspace to create and migrate. The caller has validated the name.
	Keyspace string
	// Replication used when the keyspace is created. An existing keyspace is not altered.
	Replication Replication
	// LockTTL bounds how long a crashed migrator blocks others. Default 2m.
	LockTTL time.Duration
}

// Result reports what Migrate did.
type Result struct {
	From, To int      // schema versions before and after
	Applied  []string // names of the migrations applied now, e.g. "0002_inbox"
}

const metaTables = `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int PRIMARY KEY,
    name       text,
    checksum   text,
    applied_at timestamp
);
CREATE TABLE IF NOT EXISTS schema_lock (
    id    text PRIMARY KEY,
    owner text
);`

// Migrate creates the keyspace if missing and applies the pending migrations in order, each
// recorded in schema_migrations. Concurrent migrators (several parleyd starting at once)
// serialise on a lightweight-transaction lock. It fails with ErrSchemaNewer if the keyspace is
// ahead of this binary and with ErrChecksum if an applied migration was edited.
func Migrate(ctx context.Context, open SessionOpener, cfg Config, logger *slog.Logger) (Result, error) {
	ms, err := Migrations()
	if err != nil {
		return Result{}, err
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 2 * time.Minute
	}
	if err := createKeyspace(ctx, open, cfg); err != nil {
		return Result{}, err
	}
	s, err := open(ctx, cfg.Keyspace)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	for _, stmt := range splitStatements(metaTables) {
		if err := s.Query(stmt).ExecContext(ctx); err != nil {
			return Result{}, fmt.Errorf("create schema tables: %w", err)
		}
	}
	// Nothing pending (the common case: every process of a deployment migrates at start):
	// no lock, so processes starting together do not contend for it.
	if applied, err := appliedVersions(ctx, s); err == nil && len(applied) == len(ms) && compare(applied, ms) == nil {
		return Result{From: len(applied), To: len(applied)}, nil
	}
	unlock, err := lock(ctx, s, cfg.LockTTL, logger)
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	applied, err := appliedVersions(ctx, s)
	if err != nil {
		return Result{}, err
	}
	res := Result{From: len(applied), To: len(applied)}
	if err := compare(applied, ms); err != nil && !errors.Is(err, ErrSchemaBehind) {
		return res, err
	}
	for _, m := range ms[len(applied):] {
		name := fmt.Sprintf("%04d_%s", m.Version, m.Name)
		logger.Info("applying migration", "migration", name, "keyspace", cfg.Keyspace)
		for _, stmt := range m.Statements {
			if err := s.Query(stmt).ExecContext(ctx); err != nil {
				return res, fmt.Errorf("migration %s: %w\nstatement: %s", name, err, stmt)
			}
		}
		if err := s.AwaitSchemaAgreement(ctx); err != nil {
			return res, fmt.Errorf("migration %s: schema agreement: %w", name, err)
		}
		if err := s.Query(`INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)`,
			m.Version, m.Name, m.Checksum, time.Now()).ExecContext(ctx); err != nil {
			return res, fmt.Errorf("record migration %s: %w", name, err)
		}
		res.Applied = append(res.Applied, name)
		res.To = m.Version
	}
	return res, nil
}

func createKeyspace(ctx context.Context, open SessionOpener, cfg Config) error {
	s, err := open(ctx, "")
	if err != nil {
		return err
	}
	defer s.Close()
	// The keyspace name and replication were validated; DDL cannot take bound parameters.
	stmt := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", cfg.Keyspace, cfg.Replication.cql())
	if err := s.Query(stmt).ExecContext(ctx); err != nil {
		return fmt.Errorf("create keyspace %s: %w", cfg.Keyspace, err)
	}
	return s.AwaitSchemaAgreement(ctx)
}

// lock takes the migration lock with a lightweight transaction, waiting while another
// migrator holds it. The lock row has a TTL, so a crashed migrator cannot block forever.
func lock(ctx context.Context, s *gocql.Session, ttl time.Duration, logger *slog.Logger) (unlock func(), err error) {
	owner := gocql.MustRandomUUID().String()
	for {
		prev := map[string]any{}
		applied, err := s.Query(`INSERT INTO schema_lock (id, owner) VALUES ('migrate', ?) IF NOT EXISTS USING TTL ?`,
			owner, int(ttl.Seconds())).MapScanCASContext(ctx, prev)
		var timeout *gocql.RequestErrWriteTimeout
		if errors.As(err, &timeout) {
			// A Paxos round lost to another migrator's (CAS contention): try again.
			logger.Info("migration lock contended; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("take migration lock: %w", ctx.Err())
			case <-time.After(time.Second):
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("take migration lock: %w", err)
		}
		holder, _ := prev["owner"].(string)
		if applied {
			break
		}
		logger.Info("waiting for another migrator", "holder", holder)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("take migration lock held by %s: %w", holder, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	return func() {
		// The release is a Paxos round too, and loses to waiting migrators' rounds just as
		// taking the lock does (a write timeout): retry it, or they wait for the TTL.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			err := s.Query(`DELETE FROM schema_lock WHERE id = 'migrate' IF owner = ?`, owner).ExecContext(ctx)
			var timeout *gocql.RequestErrWriteTimeout
			if errors.As(err, &timeout) && ctx.Err() == nil {
				logger.Info("release of the migration lock contended; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			if err != nil {
				logger.Warn("release migration lock (it expires by itself)", "err", err)
			}
			return
		}
	}, nil
}

type appliedMigration struct {
	version  int
	name     string
	checksum string
}

func appliedVersions(ctx context.Context, s *gocql.Session) ([]appliedMigration, error) {
	iter := s.Query(`SELECT version, name, checksum FROM schema_migrations`).Idempotent(true).IterContext(ctx)
	var (
		out []appliedMigration
		a   appliedMigration
	)
	for iter.Scan(&a.version, &a.name, &a.checksum) {
		out = append(out, a)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// compare checks applied migrations against the embedded ones.
func compare(applied []appliedMigration, ms []Migration) error {
	for i, a := range applied {
		if a.version != i+1 {
			return fmt.Errorf("schema_migrations has a gap before version %d", a.version)
		}
		if i >= len(ms) {
			return fmt.Errorf("%w: keyspace is at version %d (%04d_%s), this binary knows up to %d",
				ErrSchemaNewer, applied[len(applied)-1].version, a.version, a.name, len(ms))
		}
		if a.checksum != ms[i].Checksum {
			return fmt.Errorf("%w: %04d_%s", ErrChecksum, a.version, a.name)
		}
	}
	if len(applied) < len(ms) {
		return fmt.Errorf("%w: keyspace is at version %d, this binary needs %d; run `parleyd migrate`",
			ErrSchemaBehind, len(applied), len(ms))
	}
	return nil
}

// Check verifies, without changing anything, that the keyspace s is bound to has exactly the
// embedded migrations applied. It returns ErrSchemaNewer, ErrSchemaBehind or ErrChecksum
// (wrapped) when it does not.
func Check(ctx context.Context, s *gocql.Session) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, s)
	if err != nil {
		return err
	}
	return compare(applied, ms)
}
