package lab

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// NewProgress reports runs on w: a progress bar per run when w is a
// terminal, one plain line per run otherwise.
func NewProgress(w io.Writer, terminal bool) Progress {
	if terminal {
		return &barProgress{w: w}
	}
	return plainProgress{w: w}
}

type plainProgress struct{ w io.Writer }

func (p plainProgress) Start(scenario, impl string, expected time.Duration) {
	fmt.Fprintf(p.w, "lab: %-20s %-11s running (about %v)\n", scenario, impl, expected)
}

func (p plainProgress) Done(o Outcome) { fmt.Fprintf(p.w, "lab: %s\n", summary(o)) }

func summary(o Outcome) string {
	s := fmt.Sprintf("%-20s %-11s ", o.Scenario, o.Impl)
	switch {
	case o.Skipped != "":
		return s + "skipped: " + o.Skipped
	case o.Err != "":
		return s + "broke off: " + o.Err
	}
	c := o.Check
	what := fmt.Sprintf("%d acquisitions, %d violations", c.Acquisitions, c.Violations)
	if c.HasAuction {
		what = fmt.Sprintf("%d bids, %d broke the auction invariant", c.Bids, c.AuctionViolations)
	}
	return s + fmt.Sprintf("%v, %s: %s", o.Elapsed.Round(100*time.Millisecond), what, o.Verdict)
}

// barProgress draws one bar per run, filled by elapsed time against the
// expected length. The ticking goroutine belongs to the current run and is
// stopped and waited for in Done.
type barProgress struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	stop chan struct{}
	wg   sync.WaitGroup
}

func (p *barProgress) Start(scenario, impl string, expected time.Duration) {
	total := max(expected.Milliseconds(), 1)
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%-20s %-11s", scenario, impl)),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
	)
	p.stop = make(chan struct{})
	start := time.Now()
	bar, stop := p.bar, p.stop
	p.wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				// Stay short of full: a run may outlast its estimate.
				_ = bar.Set64(min(time.Since(start).Milliseconds(), total-1))
			}
		}
	})
}

func (p *barProgress) Done(o Outcome) {
	close(p.stop)
	p.wg.Wait()
	_ = p.bar.Finish()
	fmt.Fprintln(p.w, summary(o))
}
