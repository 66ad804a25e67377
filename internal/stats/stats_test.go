package stats

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	cases := []struct {
		d    []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{ms(4, 1, 3, 2), 0.75, 3 * time.Millisecond},
		{ms(4, 1, 3, 2), 1, 4 * time.Millisecond},
		{ms(4, 1, 3, 2), 0, time.Millisecond},
		{ms(10, 20, 30, 40, 50, 60, 70, 80, 90, 100), 0.99, 100 * time.Millisecond},
	}
	for _, c := range cases {
		in := append([]time.Duration(nil), c.d...)
		if got := Quantile(c.d, c.q); got != c.want {
			t.Errorf("Quantile(%v, %v) = %v, want %v", c.d, c.q, got, c.want)
		}
		for i := range in {
			if in[i] != c.d[i] {
				t.Fatal("Quantile modified its input")
			}
		}
	}
}
