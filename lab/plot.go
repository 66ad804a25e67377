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
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	holdColor    = color.NRGBA{R: 0x33, G: 0x66, B: 0xcc, A: 0xff}
	pausedColor  = color.NRGBA{R: 0xbb, G: 0xbb, B: 0xbb, A: 0xff}
	faultColor   = color.NRGBA{R: 0xee, G: 0x88, B: 0x22, A: 0xff}
	faultShade   = color.NRGBA{R: 0xff, G: 0x99, B: 0x33, A: 0x30}
	violColor    = color.NRGBA{R: 0xdd, G: 0x00, B: 0x00, A: 0xff}
	writeColor   = color.NRGBA{R: 0x22, G: 0x22, B: 0x22, A: 0xff}
	abortedColor = color.NRGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff}
)

// Sizes of the figure. The label margin is wider than the longest row label
// needs in the embedded font: the SVG carries that font, so a viewer
// measures the labels the same way.
const (
	figureWidth = 9 * vg.Inch
	legendRow   = vg.Inch / 6
)

// A legend entry: a swatch and what it means.
type legendEntry struct {
	thumb plot.Thumbnailer
	text  string
}

type swatch struct {
	clr    color.Color
	height float64 // share of the thumbnail's height
}

func (s swatch) Thumbnail(c *draw.Canvas) {
	h := c.Max.Y - c.Min.Y
	mid := (c.Max.Y + c.Min.Y) / 2
	half := vg.Length(s.height) * h / 2
	c.FillPolygon(s.clr, []vg.Point{{X: c.Min.X, Y: mid - half}, {X: c.Max.X, Y: mid - half}, {X: c.Max.X, Y: mid + half}, {X: c.Min.X, Y: mid + half}})
}

type tick struct {
	clr   color.Color
	width vg.Length
	low   float64 // share of the height, from the bottom, where the tick starts
}

func (t tick) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	h := c.Max.Y - c.Min.Y
	c.StrokeLine2(draw.LineStyle{Color: t.clr, Width: t.width}, x, c.Min.Y+vg.Length(t.low)*h, x, c.Max.Y)
}

type glyph struct{ sty draw.GlyphStyle }

func (g glyph) Thumbnail(c *draw.Canvas) { c.DrawGlyphNoClip(g.sty, c.Center()) }

var (
	refusedGlyph = draw.GlyphStyle{Color: color.Black, Radius: vg.Points(3.5), Shape: draw.CrossGlyph{}}
	expiredGlyph = draw.GlyphStyle{Color: violColor, Radius: vg.Points(4), Shape: draw.PyramidGlyph{}}
)

// legendFor lists what the figure's panels show, in a fixed order.
func legendFor(s *ScenarioResult) []legendEntry {
	var paused, faults, viol, expired, writes, badBids, stale, refused, aborted bool
	for _, o := range s.Outcomes {
		h := o.History
		for _, hd := range h.Holds {
			paused = paused || hd.Released > hd.Until
		}
		faults = faults || len(h.Faults) > 0
		viol = viol || len(o.Check.Overlaps) > 0
		expired = expired || len(o.Check.ExpiredAtReturn) > 0
		badBids = badBids || len(o.Check.BadBids) > 0
		stale = stale || len(o.Check.StaleAccepted) > 0
		for _, w := range h.Writes {
			writes = writes || w.Accepted
			refused = refused || w.Rejected
			aborted = aborted || w.Aborted
		}
	}
	out := []legendEntry{{swatch{holdColor, 0.7}, "holding the lock: from Acquire's return to release or the validity deadline"}}
	add := func(ok bool, t plot.Thumbnailer, text string) {
		if ok {
			out = append(out, legendEntry{t, text})
		}
	}
	add(paused, swatch{pausedColor, 0.3}, "paused client still acting after its validity ended")
	add(faults, swatch{faultColor, 0.6}, "fault in force on the nodes named in its row (shaded across every row)")
	add(viol, swatch{violColor, 0.7}, "two clients held at once: a violation (its own row, and inside both holds)")
	add(expired, glyph{expiredGlyph}, "lock returned with its validity already over: a violation (its own row, and at the return)")
	add(writes, tick{writeColor, vg.Points(0.6), 0}, "write accepted by the storage")
	add(badBids, tick{violColor, vg.Points(1.2), 0}, "accepted bid not above the price before it: the auction invariant broke")
	add(stale, tick{violColor, vg.Points(1.2), 0}, "write accepted from a holder older than one already written for: stale")
	add(refused, glyph{refusedGlyph}, "write refused by the fencing check (stale token)")
	add(aborted, tick{abortedColor, vg.Points(0.6), 0.6}, "optimistic transaction aborted by EXEC (its bid not written)")
	return out
}

// drawLegend draws entries one per line from the top of c.
func drawLegend(c draw.Canvas, entries []legendEntry) {
	l := plot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = vg.Points(9)
	l.ThumbnailWidth = vg.Points(16)
	l.Padding = legendRow - l.TextStyle.Rectangle("Xg").Size().Y
	for _, e := range entries {
		l.Add(e.text, e.thumb)
	}
	l.Draw(c)
}

// writeTimeline draws, as SVG (fonts embedded) or PNG by path's extension,
// a legend and one panel per implementation that ran: a row per client with
// its holding intervals as bars and its writes as marks, the faults as
// shaded spans, and the violations as red marks on their own row.
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
			if i < len(o.History.RowNames) {
				names = append(names, o.History.RowNames[i])
			} else {
				names = append(names, fmt.Sprintf("client %d", i))
			}
		}
		for _, f := range o.History.Faults {
			names = append(names, faultLabel(f))
		}
		p.NominalY(names...)
		p.Y.Padding = vg.Points(6) // keeps the row labels off the fault shading
		p.Add(timeline{h: o.History, check: o.Check})
		plots = append(plots, []*plot.Plot{p})
		height += vg.Inch + vg.Length(len(names))*vg.Inch/5
	}
	if len(plots) == 0 {
		return nil
	}
	entries := legendFor(s)
	band := vg.Length(len(entries))*legendRow + vg.Inch/8
	height += band
	var c vg.CanvasWriterTo
	switch format := strings.TrimPrefix(filepath.Ext(path), "."); format {
	case "svg":
		c = vgsvg.NewWith(vgsvg.UseWH(figureWidth, height), vgsvg.EmbedFonts(true))
	default:
		var err error
		if c, err = draw.NewFormattedCanvas(figureWidth, height, format); err != nil {
			return fmt.Errorf("lab: timeline: %w", err)
		}
	}
	dc := draw.New(c)
	legendArea := draw.Crop(dc, vg.Inch/8, -vg.Inch/8, height-band, -vg.Inch/16)
	drawLegend(legendArea, entries)
	panels := draw.Crop(dc, 0, 0, 0, -band)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 4, PadRight: vg.Inch / 4}
	canvases := plot.Align(plots, tiles, panels)
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

// faultLabel names a fault's row, short enough to leave the panel its width.
func faultLabel(f FaultSpan) string {
	nodes := make([]string, len(f.Nodes))
	for i, n := range f.Nodes {
		nodes[i] = fmt.Sprint(n)
	}
	word := "node"
	if len(nodes) > 1 {
		word = "nodes"
	}
	l := f.Name
	if len(nodes) > 0 {
		l = fmt.Sprintf("%s, %s %s", f.Name, word, strings.Join(nodes, " "))
	}
	if r := []rune(l); len(r) > 36 {
		l = string(r[:35]) + "…"
	}
	return l
}

// timeline is a plot.Plotter for one history. Rows: 0 = violations, client
// i at i+1, then one row per fault, named after it.
type timeline struct {
	h     History
	check Check
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
	line := func(clr color.Color, w vg.Length, x, y0, y1 float64) {
		for _, l := range c.ClipLinesXY([]vg.Point{{X: tx(x), Y: ty(y0)}, {X: tx(x), Y: ty(y1)}}) {
			c.StrokeLines(draw.LineStyle{Color: clr, Width: w}, l)
		}
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
	// Writes: a thin line per accepted write across the client's row, a
	// short grey one per aborted transaction, a red one per bid that broke
	// the auction invariant, a cross per write the fencing check refused.
	bad := make(map[int]bool, len(t.check.BadBids)+len(t.check.StaleAccepted))
	for _, i := range append(t.check.BadBids, t.check.StaleAccepted...) {
		bad[i] = true
	}
	for i, w := range t.h.Writes {
		y := float64(w.Client + 1)
		x := w.At.Seconds()
		switch {
		case bad[i]:
			line(violColor, vg.Points(1.2), x, y-0.45, y+0.45)
		case w.Accepted:
			line(writeColor, vg.Points(0.6), x, y-0.45, y+0.45)
		case w.Aborted:
			line(abortedColor, vg.Points(0.6), x, y-0.45, y-0.1)
		}
	}
	for _, w := range t.h.Writes {
		if w.Rejected {
			pt := vg.Point{X: tx(w.At.Seconds()), Y: ty(float64(w.Client + 1))}
			if c.Contains(pt) {
				c.DrawGlyph(refusedGlyph, pt)
			}
		}
	}
	// A lock returned already expired: a mark at its return, on its row and
	// on the violations row.
	for _, i := range t.check.ExpiredAtReturn {
		hd := t.h.Holds[i]
		x := hd.Acquired.Seconds()
		rect(violColor, x, x+minW, -0.35, 0.35)
		for _, y := range []float64{0, float64(hd.Client + 1)} {
			if pt := (vg.Point{X: tx(x), Y: ty(y)}); c.Contains(pt) {
				c.DrawGlyph(expiredGlyph, pt)
			}
		}
	}
	// A violation: a full bar on its own row, and a red core inside both
	// holders' bars, which stay visible around it.
	for _, o := range t.check.Overlaps {
		s, e := o.Start.Seconds(), o.End.Seconds()
		rect(violColor, s, max(e, s+minW), -0.35, 0.35)
		for _, i := range []int{o.A, o.B} {
			y := float64(t.h.Holds[i].Client + 1)
			rect(violColor, s, max(e, s+minW), y-0.12, y+0.12)
		}
	}
}
