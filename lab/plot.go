package lab

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	holdColor   = color.NRGBA{R: 0x33, G: 0x66, B: 0xcc, A: 0xff}
	pausedColor = color.NRGBA{R: 0xbb, G: 0xbb, B: 0xbb, A: 0xff}
	faultColor  = color.NRGBA{R: 0xee, G: 0x88, B: 0x22, A: 0xff}
	faultShade  = color.NRGBA{R: 0xff, G: 0x99, B: 0x33, A: 0x30}
	violColor   = color.NRGBA{R: 0xdd, G: 0x00, B: 0x00, A: 0xff}
)

// writeTimeline draws, as SVG or PNG by path's extension, one panel per implementation that ran: a row per
// client with its holding intervals as bars (grey tails: a paused client
// still acting after its validity ended), the faults as shaded spans, and the
// violations as red marks on their own row.
func writeTimeline(path string, s *ScenarioResult) error {
	var plots [][]*plot.Plot
	height := vg.Length(0)
	for _, o := range s.Outcomes {
		if o.Skipped != "" || o.History.Duration == 0 {
			continue
		}
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s — %s: %s", s.Name, o.Impl, o.Verdict)
		p.X.Label.Text = "seconds since start"
		names := []string{"violations"}
		for i := range o.History.Clients {
			names = append(names, fmt.Sprintf("client %d", i))
		}
		for _, f := range o.History.Faults {
			names = append(names, fmt.Sprintf("%s %v", f.Name, f.Nodes))
		}
		p.NominalY(names...)
		p.Add(timeline{h: o.History, overlaps: o.Check.Overlaps})
		plots = append(plots, []*plot.Plot{p})
		height += vg.Inch + vg.Length(len(names))*vg.Inch/5
	}
	if len(plots) == 0 {
		return nil
	}
	width := 9 * vg.Inch
	format := strings.TrimPrefix(filepath.Ext(path), ".")
	c, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("lab: timeline: %w", err)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("lab: timeline: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("lab: timeline: %w", err)
	}
	return f.Close()
}

// timeline is a plot.Plotter for one history. Rows: 0 = violations, client
// i at i+1, then one row per fault, named after it.
type timeline struct {
	h        History
	overlaps []Overlap
}

func (t timeline) DataRange() (xmin, xmax, ymin, ymax float64) {
	end := t.h.Duration
	for _, h := range t.h.Holds {
		end = max(end, h.Released, h.End())
	}
	return 0, end.Seconds(), -0.5, float64(t.h.Clients+len(t.h.Faults)) + 0.5
}

func (t timeline) Plot(c draw.Canvas, p *plot.Plot) {
	tx, ty := p.Transforms(&c)
	rect := func(clr color.Color, x0, x1, y0, y1 float64) {
		if x1 <= x0 {
			return
		}
		c.FillPolygon(clr, c.ClipPolygonXY([]vg.Point{
			{X: tx(x0), Y: ty(y0)}, {X: tx(x1), Y: ty(y0)}, {X: tx(x1), Y: ty(y1)}, {X: tx(x0), Y: ty(y1)},
		}))
	}
	_, xmax, ymin, ymax := t.DataRange()
	// Faults and overlaps are often milliseconds wide: draw each at least a
	// hair wide so that it stays visible at any run length.
	minW := xmax / 300
	for i, f := range t.h.Faults {
		end := f.End
		if end <= f.Start {
			end = t.h.Duration
		}
		x0, x1 := f.Start.Seconds(), max(end.Seconds(), f.Start.Seconds()+minW)
		rect(faultShade, x0, x1, ymin, ymax)
		y := float64(t.h.Clients + 1 + i)
		rect(faultColor, x0, x1, y-0.3, y+0.3)
	}
	for _, h := range t.h.Holds {
		y := float64(h.Client + 1)
		rect(holdColor, h.Acquired.Seconds(), h.End().Seconds(), y-0.35, y+0.35)
		if h.Released > h.Until {
			rect(pausedColor, max(h.Acquired, h.Until).Seconds(), h.Released.Seconds(), y-0.15, y+0.15)
		}
	}
	// A violation: a full bar on its own row, and a red core inside both
	// holders' bars, which stay visible around it.
	for _, o := range t.overlaps {
		s, e := o.Start.Seconds(), o.End.Seconds()
		rect(violColor, s, max(e, s+minW), -0.35, 0.35)
		for _, i := range []int{o.A, o.B} {
			y := float64(t.h.Holds[i].Client + 1)
			rect(violColor, s, max(e, s+minW), y-0.12, y+0.12)
		}
	}
}
