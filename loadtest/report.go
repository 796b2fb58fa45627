package loadtest

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// Report is what a run writes as HTML: a page that opens without network access (the charts
// are inline SVG, no scripts or external assets).
type Report struct {
	Title    string
	Command  string
	Started  time.Time
	Duration time.Duration
	Settings [][2]string
	Verdict  Verdict
	Accepted LatencySummary
	Deliver  LatencySummary
	// Conns is the number of open connections during the run (constant for chat).
	Conns int

	checker *Checker
}

// NewReport starts a report of a run measured by c (its series must be set).
func NewReport(title, command string, started time.Time, c *Checker) *Report {
	return &Report{Title: title, Command: command, Started: started, checker: c}
}

type point struct{ x, y float64 }

type line struct {
	Name   string
	Color  string
	points []point
}

// chart renders lines as an SVG line chart.
func chart(title, xLabel, yLabel string, lines []line, logX bool) template.HTML {
	const w, h, left, right, top, bottom = 720.0, 260.0, 60.0, 20.0, 30.0, 40.0
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, l := range lines {
		for _, p := range l.points {
			minX, maxX, maxY = math.Min(minX, p.x), math.Max(maxX, p.x), math.Max(maxY, p.y)
		}
	}
	if math.IsInf(minX, 0) {
		minX, maxX = 0, 1
	}
	if maxX == minX {
		maxX = minX + 1
	}
	if maxY == 0 {
		maxY = 1
	}
	maxY *= 1.1
	px := func(x float64) float64 { return left + (x-minX)/(maxX-minX)*(w-left-right) }
	py := func(y float64) float64 { return h - bottom - y/maxY*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`, w, h, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="13" font-weight="bold">%s</text>`, left, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, left, top, left, h-bottom)
	for i := 0; i <= 4; i++ {
		y := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`, left-4, py(y)+4, short(y))
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`, left, py(y), w-right, py(y))
	}
	for i := 0; i <= 4; i++ {
		x := minX + (maxX-minX)*float64(i)/4
		label := short(x)
		if logX {
			label = fmt.Sprintf("p%s", short(100-math.Pow(10, -x+2)))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, px(x), h-bottom+14, label)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, (left+w-right)/2, h-6, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="12" y="%.0f" transform="rotate(-90 12 %.0f)" text-anchor="middle">%s</text>`, (top+h-bottom)/2, (top+h-bottom)/2, template.HTMLEscapeString(yLabel))
	for i, l := range lines {
		var pts []string
		for _, p := range l.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.x), py(p.y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, l.Color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%d" width="10" height="10" fill="%s"/><text x="%.0f" y="%d">%s</text>`,
			w-right-150, 8+i*14, l.Color, w-right-136, 17+i*14, template.HTMLEscapeString(l.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped labels
}

func short(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.R.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.ok{color:#080;font-weight:bold}.bad{color:#b00;font-weight:bold}code{background:#f4f4f4;padding:2px 4px}</style></head>
<body><h1>{{.R.Title}}</h1>
<p>Started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}, ran {{.R.Duration}}. Command: <code>{{.R.Command}}</code></p>
<p>Verdict: {{if .R.Verdict.OK}}<span class="ok">nothing lost, duplicated, reordered or invented</span>{{else}}<span class="bad">FAULTS FOUND</span>{{end}}</p>
<table><tr><th>sent</th><th>accepted</th><th>expected deliveries</th><th>delivered</th><th>lost</th><th>duplicated</th><th>reordered</th><th>phantom</th><th>connections</th></tr>
<tr><td>{{.R.Verdict.Sent}}</td><td>{{.R.Verdict.Accepted}}</td><td>{{.R.Verdict.Expected}}</td><td>{{.R.Verdict.Delivered}}</td><td>{{.R.Verdict.Lost}}</td><td>{{.R.Verdict.Duplicated}}</td><td>{{.R.Verdict.Reordered}}</td><td>{{.R.Verdict.Phantom}}</td><td>{{.R.Conns}}</td></tr></table>
<table><tr><th>latency (ms)</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
<tr><td>send &rarr; accepted</td><td>{{.R.Accepted.Count}}</td><td>{{printf "%.1f" .R.Accepted.P50}}</td><td>{{printf "%.1f" .R.Accepted.P90}}</td><td>{{printf "%.1f" .R.Accepted.P99}}</td><td>{{printf "%.1f" .R.Accepted.P999}}</td><td>{{printf "%.1f" .R.Accepted.Max}}</td></tr>
<tr><td>send &rarr; delivered</td><td>{{.R.Deliver.Count}}</td><td>{{printf "%.1f" .R.Deliver.P50}}</td><td>{{printf "%.1f" .R.Deliver.P90}}</td><td>{{printf "%.1f" .R.Deliver.P99}}</td><td>{{printf "%.1f" .R.Deliver.P999}}</td><td>{{printf "%.1f" .R.Deliver.Max}}</td></tr></table>
<table><tr><th>setting</th><th>value</th></tr>{{range .R.Settings}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
{{range .Charts}}<div>{{.}}</div>{{end}}
</body></html>
`))

// WriteHTML writes the report.
func (r *Report) WriteHTML(w io.Writer) error {
	c := r.checker
	c.mu.Lock()
	var sent, acc, del, accP99, delP50, delP99, conns []point
	for i, b := range c.series.buckets {
		x := float64(i)
		sent, acc, del = append(sent, point{x, float64(b.sent)}), append(acc, point{x, float64(b.accepted)}), append(del, point{x, float64(b.delivered)})
		if b.acceptLat.h.TotalCount() > 0 {
			accP99 = append(accP99, point{x, b.acceptLat.Quantile(99)})
		}
		if b.deliverLat.h.TotalCount() > 0 {
			delP50 = append(delP50, point{x, b.deliverLat.Quantile(50)})
			delP99 = append(delP99, point{x, b.deliverLat.Quantile(99)})
		}
		conns = append(conns, point{x, float64(r.Conns)})
	}
	// The distribution: x = -log10(1 - q) so p90, p99, p99.9 are evenly spaced.
	var accDist, delDist []point
	for _, q := range []float64{0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99} {
		x := -math.Log10(1-q/100) + 0
		accDist = append(accDist, point{x, c.acceptLat.Quantile(q)})
		delDist = append(delDist, point{x, c.deliverLat.Quantile(q)})
	}
	c.mu.Unlock()
	charts := []template.HTML{
		chart("Throughput over time", "seconds since start", "messages per second",
			[]line{{"sent", "#999", sent}, {"accepted", "#1f77b4", acc}, {"delivered (per device)", "#2ca02c", del}}, false),
		chart("Latency over time", "seconds since start", "milliseconds",
			[]line{{"accepted p99", "#1f77b4", accP99}, {"delivered p50", "#98df8a", delP50}, {"delivered p99", "#2ca02c", delP99}}, false),
		chart("Latency percentile distribution", "percentile", "milliseconds",
			[]line{{"send -> accepted", "#1f77b4", accDist}, {"send -> delivered", "#2ca02c", delDist}}, true),
		chart("Connections over time", "seconds since start", "open connections", []line{{"connections", "#9467bd", conns}}, false),
	}
	return reportTmpl.Execute(w, struct {
		R      *Report
		Charts []template.HTML
	}{r, charts})
}
