package backend

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// waitUntil calls try until it succeeds or ctx ends, backing off from 100ms to 2s. It is used
// at start-up only, where a dependency that is still booting is normal; the last error is
// returned with the dependency's name if ctx ends first.
func waitUntil(ctx context.Context, logger *slog.Logger, name string, try func(context.Context) error) error {
	delay := 100 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil {
			last = err // an attempt cut short by ctx says less than the one before it
		}
		if attempt == 1 || attempt%10 == 0 {
			logger.Info("waiting for dependency", "dependency", name, "attempt", attempt, "err", last)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s not reachable: %w (gave up: %v)", name, last, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}
