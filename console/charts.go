package console

import (
	"time"

	"github.com/custos-dev/custos/detect"
)

// maxBuckets bounds the points of an alert chart.
const maxBuckets = 24 * 60

// span is the time axis of a chart over alerts: buckets of one width from
// start, by minute, by hour past a day, by day past sixty.
type span struct {
	start time.Time
	width time.Duration
	n     int
	unit  string
}

func spanOf(as []detect.Alert) (span, bool) {
	if len(as) == 0 {
		return span{}, false
	}
	first, last := as[0].FirstSeen, as[0].LastSeen
	for _, a := range as {
		first = minTime(first, a.FirstSeen, a.Raised)
		last = maxTime(last, a.LastSeen, a.Raised)
	}
	sp := span{width: time.Minute, unit: "minute"}
	switch d := last.Sub(first); {
	case d > 60*24*time.Hour:
		sp.width, sp.unit = 24*time.Hour, "day"
	case d > 24*time.Hour:
		sp.width, sp.unit = time.Hour, "hour"
	}
	sp.start = first.Truncate(sp.width).Add(-sp.width)
	sp.n = min(maxBuckets, int(last.Truncate(sp.width).Sub(sp.start)/sp.width)+2)
	return sp, true
}

// index is the bucket of t, clamped into the span.
func (sp span) index(t time.Time) int {
	return min(sp.n-1, max(0, int(t.Sub(sp.start)/sp.width)))
}

// xs are the buckets' starts in Unix seconds.
func (sp span) xs() []int64 {
	x := make([]int64, sp.n)
	for i := range x {
		x[i] = sp.start.Add(time.Duration(i) * sp.width).Unix()
	}
	return x
}

// chartEntities is how many entities the top-entity chart draws.
const chartEntities = 5

// alertCharts draws as over time: alerts raised by severity, and the
// events of the most active entities, named.
func alertCharts(as []detect.Alert, n *namer) (overTime, top series) {
	sp, ok := spanOf(as)
	if !ok {
		return series{}, series{}
	}
	x := sp.xs()
	overTime = series{X: x, Unit: "alerts per " + sp.unit}
	for _, sev := range severities {
		vals := make([]float64, sp.n)
		any := false
		for _, a := range as {
			if a.Severity == sev {
				vals[sp.index(a.Raised)]++
				any = true
			}
		}
		if any {
			overTime.Series = append(overTime.Series, line{Label: string(sev), Values: vals, Class: severityClass(sev)})
		}
	}
	events := map[string]int64{}
	for _, a := range as {
		events[a.Entity] += a.Count
	}
	top = series{X: x, Unit: "events per " + sp.unit}
	for _, raw := range topCounts(events, chartEntities) {
		vals := make([]float64, sp.n)
		for _, a := range as {
			if a.Entity == raw {
				vals[sp.index(a.FirstSeen)] += float64(a.Count)
			}
		}
		e := n.name(raw)
		top.Series = append(top.Series, line{Label: e.Kind + " " + e.Name, Values: vals, Class: "bad"})
	}
	return overTime, top
}

func severityClass(s detect.Severity) string {
	switch s {
	case detect.Critical, detect.High, detect.Medium:
		return "bad"
	}
	return "info"
}
