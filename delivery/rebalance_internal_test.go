package delivery

import (
	"slices"
	"testing"
)

func TestFairShare(t *testing.T) {
	for _, c := range []struct{ parts, n, want int }{
		{64, 1, 64}, {64, 2, 32}, {64, 3, 22}, {8, 3, 3}, {1, 4, 1}, {64, 0, 64},
	} {
		if got := fairShare(c.parts, c.n); got != c.want {
			t.Errorf("fairShare(%d, %d) = %d; want %d", c.parts, c.n, got, c.want)
		}
	}
}

func TestNextHandover(t *testing.T) {
	all := func(n int) []bool {
		o := make([]bool, n)
		for i := range o {
			o[i] = true
		}
		return o
	}
	some := func(n int, ps ...int) []bool {
		o := make([]bool, n)
		for _, p := range ps {
			o[p] = true
		}
		return o
	}
	for name, c := range map[string]struct {
		owned      [numStages][]bool
		share      int
		wantP      int
		wantStages []int
	}{
		"holds all: the highest partition, every stage": {[numStages][]bool{all(4), all(4), all(4)}, 2, 3, []int{0, 1, 2}},
		"at the share: nothing":                         {[numStages][]bool{some(4, 0, 1), some(4, 0, 1), some(4, 2, 3)}, 2, -1, nil},
		// Only the projector is beyond the share; the fan-out of partition 1 stays.
		"one stage beyond": {[numStages][]bool{some(4, 0), some(4, 0, 1, 3), some(4, 1)}, 2, 3, []int{1}},
		// The sequencer and the projector are beyond; partition 2 has both here, 3 one.
		"stages move together": {[numStages][]bool{some(4, 0, 1, 2), some(4, 0, 2, 3), some(4)}, 2, 2, []int{0, 1}},
	} {
		p, stages := nextHandover(c.owned, c.share)
		if len(c.wantStages) == 0 && len(stages) == 0 {
			continue
		}
		if p != c.wantP || !slices.Equal(stages, c.wantStages) {
			t.Errorf("%s: partition %d stages %v; want %d %v", name, p, stages, c.wantP, c.wantStages)
		}
	}
}
