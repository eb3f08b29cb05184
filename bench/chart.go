package main

import (
	"fmt"
	"math"
	"strings"
)

// chart draws the wide no-op family: wall time against the number of
// jobs, both on log scales, one line per tool.
func chart(results []*result, tools []*tool) string {
	const w, h, left, right, top, bottom = 640.0, 400.0, 70.0, 130.0, 30.0, 50.0
	type pt struct{ n, s float64 }
	lines := map[string][]pt{}
	minN, maxN, minS, maxS := math.Inf(1), 0.0, math.Inf(1), 0.0
	for _, r := range results {
		if !r.w.chart {
			continue
		}
		for _, t := range tools {
			if m, ok := medianOf(r.samples[t.name], wallOf); ok {
				n := float64(r.w.dag.n())
				lines[t.name] = append(lines[t.name], pt{n, m})
				minN, maxN = math.Min(minN, n), math.Max(maxN, n)
				minS, maxS = math.Min(minS, m), math.Max(maxS, m)
			}
		}
	}
	if maxN == 0 {
		return `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`
	}
	lx0, lx1 := math.Log10(minN), math.Log10(maxN)
	ly0, ly1 := math.Floor(math.Log10(minS)), math.Ceil(math.Log10(maxS))
	if lx1 == lx0 {
		lx1 = lx0 + 1
	}
	x := func(n float64) float64 { return left + (math.Log10(n)-lx0)/(lx1-lx0)*(w-left-right) }
	y := func(s float64) float64 { return h - bottom - (math.Log10(s)-ly0)/(ly1-ly0)*(h-top-bottom) }
	colors := map[string]string{"sortie": "#d62728", "sortie-verbose": "#e377c2", "make": "#1f77b4", "ninja": "#2ca02c", "go-task": "#9467bd", "dagu": "#ff7f0e"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", w, h)
	b.WriteString(`<title>Wall time of N no-op jobs at parallelism 2, Sortie and its peers</title>` + "\n")
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="white"/>`+"\n", w, h)
	for e := ly0; e <= ly1; e++ {
		yy := y(math.Pow(10, e))
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%gs</text>`+"\n",
			left, yy, w-right, yy, left-6, yy+4, math.Pow(10, e))
	}
	for _, r := range results {
		if r.w.chart {
			xx := x(float64(r.w.dag.n()))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#eee"/><text x="%.1f" y="%g" text-anchor="middle">%d</text>`+"\n",
				xx, top, xx, h-bottom, xx, h-bottom+18, r.w.dag.n())
		}
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">no-op jobs after the bootstrap (log scale)</text>`+"\n", (left+w-right)/2, h-10)
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">Wall time, parallelism 2 (log scale)</text>`+"\n", (left+w-right)/2, top-10)
	i := 0
	for _, t := range tools {
		pts := lines[t.name]
		if len(pts) == 0 {
			continue
		}
		var path []string
		for _, p := range pts {
			path = append(path, fmt.Sprintf("%.1f,%.1f", x(p.n), y(p.s)))
		}
		c := colors[t.name]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(path, " "))
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(p.n), y(p.s), c)
		}
		ly := top + 20 + float64(i)*20
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"/><text x="%g" y="%g">%s</text>`+"\n",
			w-right+15, ly, w-right+35, ly, c, w-right+40, ly+4, t.name)
		i++
	}
	b.WriteString("</svg>\n")
	return b.String()
}
