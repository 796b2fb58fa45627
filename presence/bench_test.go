package presence

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

// BenchmarkHeartbeat100k renews 100,000 sessions (one heartbeat of an edge holding them, or
// of several edges together) against the stack's Redis, in pipelines of 1,000 sessions.
// Reported: round trips and Redis commands per heartbeat; ns/op is one whole heartbeat.
func BenchmarkHeartbeat100k(b *testing.B) {
	rdb, n := teststack.Redis(b), teststack.NATS(b)
	cfg := Config{KeyPrefix: teststack.ID(b) + ":", BatchSize: 1000}
	p, err := New(cfg, rdb, n.Conn, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	const sessions = 100_000
	for i := 0; i < sessions; i++ {
		p.sessions[fmt.Sprintf("s%d", i)] = chat.UserID(fmt.Sprintf("u%d", i))
	}
	ctx := context.Background()
	b.Cleanup(func() {
		keys, _ := rdb.Keys(ctx, cfg.KeyPrefix+"*").Result()
		for len(keys) > 0 {
			k := keys[:min(1000, len(keys))]
			keys = keys[len(k):]
			rdb.Del(ctx, k...)
		}
	})
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		p.heartbeat(ctx)
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(sessions/cfg.BatchSize), "round-trips/heartbeat")
	b.ReportMetric(float64(3*sessions), "commands/heartbeat")
	b.ReportMetric(per.Seconds()*1000, "ms/heartbeat")
}
