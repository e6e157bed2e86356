package main

// The SVG chart (gonum.org/v1/plot): the CDF of edit → reverted latency,
// driftwatch beside the floor; after a sweep, also sync time and RSS
// against the object count, with their baselines. One SVG, one panel per
// plot.

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"sort"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	colorAgent = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorFloor = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colorCeil  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorKctl  = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	colorOther = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
)

// writeChart writes the chart of rep to path and returns what it shows.
func writeChart(path string, rep *report) ([]string, error) {
	last := rep.Runs[len(rep.Runs)-1]
	cdf, err := cdfPlot(last)
	if err != nil {
		return nil, err
	}
	panels := []*plot.Plot{cdf}
	shows := []string{fmt.Sprintf("edit → reverted latency CDF, driftwatch vs floor (%s ConfigMaps)", thousands(last.ConfigMaps))}
	if len(rep.Runs) > 1 {
		syncP, err := sweepPlot(rep.Runs, "initial sync vs object count", "time (s)", []series{
			{"driftwatch", colorAgent, func(r *runResult) float64 { return r.Sync.Seconds }},
			{"ceiling (32 workers SSA)", colorCeil, func(r *runResult) float64 { return r.Ceiling.Seconds }},
			{"kubectl apply --server-side", colorKctl, func(r *runResult) float64 { return r.Kubectl.Seconds }},
		})
		if err != nil {
			return nil, err
		}
		rssP, err := sweepPlot(rep.Runs, "memory at steady state vs object count", "MiB", []series{
			{"driftwatch RSS", colorAgent, func(r *runResult) float64 { return r.Memory.Steady.RSS / (1 << 20) }},
			{"driftwatch heap", colorOther, func(r *runResult) float64 { return r.Memory.Steady.Heap / (1 << 20) }},
			{"stock dynamic informer RSS", colorCeil, func(r *runResult) float64 { return r.Memory.StockDynamic.RSS / (1 << 20) }},
			{"stock metadata informer RSS", colorFloor, func(r *runResult) float64 { return r.Memory.StockMetadata.RSS / (1 << 20) }},
		})
		if err != nil {
			return nil, err
		}
		panels = append(panels, syncP, rssP)
		shows = append(shows, "initial sync time vs object count (driftwatch, ceiling, kubectl)",
			"steady-state RSS and heap vs object count (driftwatch, stock dynamic and metadata informers)")
	}
	const panelW, panelH = 14 * vg.Centimeter, 10 * vg.Centimeter
	img := vgsvg.New(panelW*vg.Length(len(panels)), panelH)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Centimeter, PadTop: vg.Millimeter * 3,
		PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return nil, err
	}
	return shows, f.Close()
}

// cdfPlot draws the empirical CDFs of the agent's and the floor's latency
// on a logarithmic time axis.
func cdfPlot(r *runResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "edit → reverted"
	p.X.Label.Text = "latency from the edit's response (ms, log scale; ≤ 0.1 drawn at 0.1)"
	p.Y.Label.Text = "fraction of edits"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = ticks125{}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		name string
		c    color.Color
		ls   []latency
	}{{"driftwatch", colorAgent, r.agentLat}, {"floor", colorFloor, r.floorLat}} {
		if len(s.ls) == 0 {
			continue
		}
		d := make([]float64, len(s.ls))
		for i, l := range s.ls {
			// A log axis has no zero: an edit restored before its own
			// response arrived (latency 0) is drawn at 0.1 ms.
			d[i] = max(float64(l.d)/float64(time.Millisecond), 0.1)
		}
		sort.Float64s(d)
		pts := make(plotter.XYs, 0, 2*len(d))
		for i, v := range d {
			pts = append(pts, plotter.XY{X: v, Y: float64(i) / float64(len(d))}, plotter.XY{X: v, Y: float64(i+1) / float64(len(d))})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		line.Color = s.c
		line.Width = vg.Points(1.5)
		p.Add(line)
		q := quantilesOf(s.ls, "")
		p.Legend.Add(fmt.Sprintf("%s: p50 %s ms, p99 %s ms", s.name, ms(q.P50), ms(q.P99)), line)
	}
	return p, nil
}

// series is one line of a sweep plot.
type series struct {
	name  string
	color color.Color
	value func(*runResult) float64
}

func sweepPlot(runs []*runResult, title, ylabel string, ss []series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "ConfigMaps"
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for _, s := range ss {
		pts := make(plotter.XYs, len(runs))
		for i, r := range runs {
			pts[i] = plotter.XY{X: float64(r.ConfigMaps), Y: s.value(r)}
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = s.color, s.color
		line.Width = vg.Points(1.5)
		p.Add(line, points)
		p.Legend.Add(s.name, line, points)
	}
	return p, nil
}

// ticks125 labels a logarithmic axis at 1, 2 and 5 times the powers of ten
// (plot.LogTicks labels powers of ten only: a single label over 3–40 ms).
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p <= hi; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := m * p; v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ts
}
