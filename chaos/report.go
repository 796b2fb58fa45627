package chaos

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// WriteReport prints a run's faults, its history in numbers, its defects (counts, then
// the first few of each kind) and the verdict.
func WriteReport(out io.Writer, res Result, examples int) {
	fmt.Fprintf(out, "\n== Parley fault-injection suite: profile %s, seed %d, %v ==\n", res.Profile, res.Seed, res.Elapsed.Round(time.Second))

	fmt.Fprintf(out, "\nFaults, in order (sent, accepted, stored: in the 10 s before the fault; last 100ms: stored in the last 100 ms;\n"+
		"outage: fault to end-to-end probe ok; after heal: restart done or SIGCONT to probe ok;\n"+
		"lost: lost messages accepted after the previous fault ended and before this one ended)\n")
	lost := lostPerFault(res)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfault\tprocess\thold\tsent\taccepted\tstored\tlast 100ms\toutage\tafter heal\tlost\t")
	for i, r := range res.Faults {
		outage, after := "-", "-"
		if !r.Recovered.IsZero() {
			outage, after = dur(r.Outage()), dur(r.AfterHeal())
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", i+1, r.Fault, r.Process, dur(r.Hold),
			r.Invoked, r.Accepted, r.Stored, r.StoredLast, outage, after, lost[i], r.Err)
	}
	tw.Flush()

	fmt.Fprintf(out, "\nFaults by kind (recovery: fault to end-to-end probe ok)\n")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tcount\trecovery p50\trecovery max\tafter heal max\tnot recovered\t")
	for _, k := range Kinds {
		for _, a := range []Action{Kill, Pause} {
			var outages, afters []time.Duration
			count, failed := 0, 0
			for _, r := range res.Faults {
				if r.Kind != k || r.Action != a {
					continue
				}
				count++
				if r.Recovered.IsZero() {
					failed++
					continue
				}
				outages = append(outages, r.Outage())
				afters = append(afters, r.AfterHeal())
			}
			if count == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s %s\t%d\t%s\t%s\t%s\t%d\t\n", k, a, count, dur(pct(outages, 50)), dur(pct(outages, 100)), dur(pct(afters, 100)), failed)
		}
	}
	tw.Flush()

	fmt.Fprintf(out, "\nWhat the faults cost the apps, by kind (p50 / max, from the fault to the next one; accept pause: no send\n"+
		"accepted; delivery delay: the longest a message sent then waited for its first device; caught up: the longest a\n"+
		"message took from accepted to every member device; presence: from the fault until it read right again, and\n"+
		"failed presence reads; >: not within the window)\n")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tcount\taccept pause\tdelivery delay\tcaught up\tpresence\tfailed reads\t")
	for _, k := range Kinds {
		for _, a := range []Action{Kill, Pause} {
			var acc, del, cat, pre []time.Duration
			failed := 0
			for _, r := range res.Faults {
				if r.Kind == k && r.Action == a && !r.Injected.IsZero() {
					acc, del = append(acc, r.Timings.AcceptPause), append(del, r.Timings.DeliveryDelay)
					cat, pre = append(cat, r.Timings.CatchUp), append(pre, r.Timings.PresenceConverged)
					failed += r.Timings.PresenceErrors
				}
			}
			if len(acc) == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s %s\t%d\t%s\t%s\t%s\t%s\t%d\t\n", k, a, len(acc), p50max(acc), p50max(del), p50max(cat), p50max(pre), failed)
		}
	}
	tw.Flush()

	v := res.Verdict
	fmt.Fprintf(out, "\nHistory\n")
	fmt.Fprintf(out, "  %d users, %d devices, %d conversations (the probe pair included)\n", res.Users+2, res.Devices, res.Conversations)
	fmt.Fprintf(out, "  sends %d: accepted %d, refused %d, unanswered at the end %d; %d went unanswered for over %v (resent by the SDK)\n",
		v.Sends, v.Accepted, v.Refused, v.Unknown, v.Resent, sendResendDelay)
	fmt.Fprintf(out, "  surfaced to the apps: %d; final reads: %d (holding %d messages); live REST reads: %d (%d failed)\n",
		v.Surfaced, v.FinalReads, v.Messages, v.LiveReads, res.LiveReadErrors)

	fmt.Fprintf(out, "\nDefects\n")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, k := range DefectKinds {
		fmt.Fprintf(tw, "  %s\t%d\t\n", k, v.Count(k))
	}
	tw.Flush()
	for _, k := range DefectKinds {
		n := v.Count(k)
		if n == 0 {
			continue
		}
		fmt.Fprintf(out, "\n  %s (first %d of %d):\n", k, min(n, examples), n)
		shown := 0
		for _, d := range v.Defects {
			if d.Kind == k && shown < examples {
				fmt.Fprintf(out, "    %s\n", d)
				shown++
			}
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintf(out, "\nerror: %s\n", e)
	}
	if len(res.Errors) > 0 && v.OK() {
		fmt.Fprintf(out, "\nVERDICT: FAIL (no defect found, but the run could not check everything: see the errors)\n")
	} else if res.Failed() {
		fmt.Fprintf(out, "\nVERDICT: FAIL (%d defects)\n", len(v.Defects))
	} else {
		fmt.Fprintf(out, "\nVERDICT: PASS (no defect in %d accepted messages)\n", v.Accepted)
	}
}

// p50max prints the median and the maximum of timings; notWithin sorts first, so any one of
// them makes the maximum ">".
func p50max(ds []time.Duration) string {
	show := func(d time.Duration) string {
		switch {
		case d < 0:
			return ">"
		case d == 0:
			return "0"
		}
		return d.Round(100 * time.Millisecond).String()
	}
	mx := pct(ds, 100)
	if slices.Contains(ds, notWithin) {
		mx = notWithin
	}
	return show(pct(ds, 50)) + " / " + show(mx)
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Millisecond).String()
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := (p*len(s) + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}

// lostPerFault attributes each lost message to the first fault that ended (was healed)
// after it was accepted: the fault during which, or just before which, it was accepted.
func lostPerFault(res Result) map[int]int {
	settled := map[string]time.Time{}
	for _, s := range res.History.Sends {
		settled[s.ClientMsgID] = s.Settled
	}
	out := map[int]int{}
	for _, d := range res.Verdict.Defects {
		if d.Kind != Lost {
			continue
		}
		at := settled[d.ClientMsgID]
		for i, r := range res.Faults {
			if !r.Healed.IsZero() && !r.Healed.Before(at) {
				out[i]++
				break
			}
		}
	}
	return out
}
