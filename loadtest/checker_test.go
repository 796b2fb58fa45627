package loadtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Fed a synthetic history with one lost, one duplicated and one reordered message (and one
// phantom), the checker reports exactly those.
func TestCheckerFindsExactlyTheFaults(t *testing.T) {
	c := NewChecker(NewSeries(time.Unix(0, 0)))
	at := time.Unix(100, 0)
	const n = 10
	for i := 1; i <= n; i++ {
		cmid := fmt.Sprintf("m%d", i)
		c.Sent(cmid, at, "alice/phone", "bob/phone")
		c.Accepted(cmid, at.Add(time.Millisecond))
	}
	deliver := func(dev string, seq int) {
		c.Delivered(dev, "conv", int64(seq), fmt.Sprintf("m%d", seq), at.Add(time.Duration(seq)*time.Millisecond))
	}
	// Alice's phone gets everything, in order: clean.
	for i := 1; i <= n; i++ {
		deliver("alice/phone", i)
	}
	// Bob's phone: 4 is lost, 6 comes twice, 8 arrives after 9.
	for _, seq := range []int{1, 2, 3, 5, 6, 6, 7, 9, 8, 10} {
		deliver("bob/phone", seq)
	}
	c.Delivered("bob/phone", "conv", 11, "never-sent", at)
	v := c.Verdict()
	want := Verdict{Sent: n, Accepted: n, Expected: 2 * n, Delivered: 2*n - 1, Lost: 1, Duplicated: 1, Reordered: 1, Phantom: 1}
	if v != want {
		t.Errorf("verdict %+v; want %+v", v, want)
	}
	if v.OK() {
		t.Error("a faulty run judged OK")
	}
	acc, del := c.Latencies()
	if acc.Count != n || acc.P50 != 1 || del.Count != 2*n-1 || del.Max < 10 || del.Max > 10.1 { // HDR: 3 significant digits
		t.Errorf("latencies: accepted %+v delivered %+v", acc, del)
	}

	clean := NewChecker(nil)
	clean.Sent("x", at, "d")
	clean.Accepted("x", at)
	clean.Delivered("d", "c", 1, "x", at)
	if v := clean.Verdict(); !v.OK() || v.Delivered != 1 || !clean.Done() {
		t.Errorf("clean run: %+v", v)
	}
}

// The HTML report is one self-contained page: the summary, and four inline SVG charts, with
// nothing fetched from the network.
func TestReportIsSelfContained(t *testing.T) {
	start := time.Unix(1000, 0)
	c := NewChecker(NewSeries(start))
	for i := 0; i < 300; i++ {
		at := start.Add(time.Duration(i) * 10 * time.Millisecond)
		cmid := fmt.Sprintf("m%d", i)
		c.Sent(cmid, at, "a", "b")
		c.Accepted(cmid, at.Add(2*time.Millisecond))
		c.Delivered("a", "conv", int64(i+1), cmid, at.Add(20*time.Millisecond))
		c.Delivered("b", "conv", int64(i+1), cmid, at.Add(25*time.Millisecond))
	}
	r := NewReport("test run", "parley-loadtest chat", start, c)
	r.Verdict = c.Verdict()
	r.Accepted, r.Deliver = c.Latencies()
	var b strings.Builder
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	if n := strings.Count(html, "<svg"); n != 4 {
		t.Errorf("%d charts; want 4", n)
	}
	for _, bad := range []string{"<script", "src=", "href=", "NaN"} {
		if strings.Contains(html, bad) {
			t.Errorf("report contains %q", bad)
		}
	}
	if !strings.Contains(html, "nothing lost") || !strings.Contains(html, "<td>600</td>") {
		t.Error("report lacks the verdict or the delivery count")
	}
}
