package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	h := cleanHistory(6)
	everywhere(&h, func(es []Entry) []Entry { return slices.DeleteFunc(es, func(e Entry) bool { return e.Seq == 6 }) })
	lostAt := sendOf(&h, testID(6)).Settled
	res := Result{Profile: "test", History: h, Verdict: Check(h), Faults: []FaultRecord{
		{Fault: Fault{Kind: KindEdge, Action: Kill}, Process: "edge-1", Injected: lostAt.Add(-2 * time.Second), Healed: lostAt.Add(-time.Second), Recovered: lostAt},
		{Fault: Fault{Kind: KindCassandra, Action: Kill}, Process: "cassandra", Injected: lostAt.Add(time.Millisecond), Healed: lostAt.Add(time.Second), Err: "boom"},
	}}
	var b strings.Builder
	WriteReport(&b, res, 3)
	out := b.String()
	// Compare lines by their fields: the column widths are tabwriter's business.
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"1 edge kill edge-1 - 0 0 0 0 2s 1s 0",
		"2 cassandra kill cassandra - 0 0 0 0 - - 1 boom",
		"cassandra kill 1 - - - 1",
		"lost 1",
		"VERDICT: FAIL (1 defects)",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("report lacks the line %q:\n%s", want, out)
		}
	}

	res = Result{Profile: "test", Errors: []string{"could not heal"}}
	b.Reset()
	WriteReport(&b, res, 3)
	if !strings.Contains(b.String(), "VERDICT: FAIL (no defect found, but the run could not check everything") {
		t.Errorf("a run that could not check passes:\n%s", b.String())
	}
}
