// Package stats holds the small summary statistics shared by the lab and the
// benchmarks, so that both report latencies the same way.
package stats

import (
	"math"
	"slices"
	"time"
)

// Quantile returns the nearest-rank q-quantile of d (the smallest value with
// at least q of the data at or below it), 0 for no data. d is not modified.
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
