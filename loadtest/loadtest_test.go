package loadtest

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTargetCheckRefusesRemote(t *testing.T) {
	for _, tt := range []struct {
		target Target
		ok     bool
	}{
		{Target{WS: "ws://127.0.0.1:8080/v1/ws", Metrics: "http://127.0.0.1:8081/metrics"}, true},
		{Target{WS: "ws://127.9.9.9:8080/v1/ws"}, true},
		{Target{WS: "ws://localhost:8080/v1/ws"}, true},
		{Target{WS: "ws://10.0.0.5:8080/v1/ws"}, false},
		{Target{WS: "ws://example.com/v1/ws"}, false},
		{Target{WS: "ws://127.0.0.1:8080/v1/ws", Metrics: "http://192.168.1.2:8081/metrics"}, false},
		{Target{WS: "ws://10.0.0.5:8080/v1/ws", AllowRemote: true}, true},
	} {
		if err := tt.target.Check(); (err == nil) != tt.ok {
			t.Errorf("Check(%+v) = %v; want ok=%v", tt.target, err, tt.ok)
		}
	}
}

func TestIntField(t *testing.T) {
	data := []byte(`{"type":"message","seq":42,"body":"1795380881150000000"}`)
	if got := intField(data, `"seq":`); got != 42 {
		t.Errorf("seq = %d; want 42", got)
	}
	if got := intField(data, `"body":"`); got != 1795380881150000000 {
		t.Errorf("body = %d", got)
	}
	if got := intField(data, `"missing":`); got != 0 {
		t.Errorf("missing = %d; want 0", got)
	}
}

func TestPercentile(t *testing.T) {
	v := []int64{5, 1, 4, 2, 3}
	sortInt64(v)
	if percentile(v, 0) != 1 || percentile(v, 50) != 3 || percentile(v, 100) != 5 || percentile(nil, 99) != 0 {
		t.Errorf("percentiles of %v wrong", v)
	}
}

func TestPacedStopsAtDurationAndOnError(t *testing.T) {
	n := 0
	if err := paced(context.Background(), 100, 200*time.Millisecond, func() error { n++; return nil }); err != nil || n == 0 || n > 25 {
		t.Errorf("paced at 100/s for 200ms: %d calls, %v", n, err)
	}
	// A call that stalls does not lower the rate: the calls due meanwhile are made after it
	// (a ticker alone would drop them: about 20 calls instead of 30).
	n = 0
	if err := paced(context.Background(), 100, 300*time.Millisecond, func() error {
		if n++; n == 1 {
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}); err != nil || n < 25 || n > 30 {
		t.Errorf("paced at 100/s for 300ms with a 100ms stall: %d calls, %v; want 25-30", n, err)
	}
	boom := errors.New("boom")
	n = 0
	if err := paced(context.Background(), 1000, time.Minute, func() error { n++; return boom }); !errors.Is(err, boom) || n != 1 {
		t.Errorf("paced with a failing fn: %d calls, %v; want 1 and the error", n, err)
	}
}
