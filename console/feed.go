package console

import (
	"slices"
	"sync"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
)

// Overview history: one bucket per minute for the last hour.
const (
	bucketWidth = time.Minute
	buckets     = 60
)

// Alert feeds a new alert to the live alert streams. Register it with
// detect.Engine.OnAlert; it never blocks.
func (c *Console) Alert(a detect.Alert) { c.alerts.publish(a) }

// Access counts one access event for the overview charts.
func (c *Console) Access(ev event.Access) { c.traffic.access(ev) }

// Issued counts one ledger change (an issued token, or a revocation) for the
// issuance rate.
func (c *Console) Issued(r ledger.Record) { c.traffic.issued(r) }

// broker fans alerts out to stream clients; a slow client loses alerts
// rather than hold up detection.
type broker struct {
	mu   sync.Mutex
	subs map[chan detect.Alert]struct{}
}

func (b *broker) subscribe() chan detect.Alert {
	ch := make(chan detect.Alert, 64)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan detect.Alert]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch
}

func (b *broker) unsubscribe(ch chan detect.Alert) {
	b.mu.Lock()
	delete(b.subs, ch)
	b.mu.Unlock()
}

func (b *broker) publish(a detect.Alert) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- a:
		default:
		}
	}
}

// bucket is one minute of traffic.
type bucket struct {
	start   time.Time
	allowed int64
	refused map[event.Reason]int64
	issued  int64
	revoked int64
}

// traffic keeps per-minute counts of the last hour, keyed by wall-clock minute.
type traffic struct {
	mu  sync.Mutex
	now func() time.Time
	b   [buckets]bucket
}

func newTraffic(now func() time.Time) *traffic { return &traffic{now: now} }

func (t *traffic) slot(now time.Time) *bucket {
	start := now.Truncate(bucketWidth)
	i := int(start.Unix()/int64(bucketWidth/time.Second)) % buckets
	b := &t.b[i]
	if !b.start.Equal(start) {
		*b = bucket{start: start, refused: map[event.Reason]int64{}}
	}
	return b
}

func (t *traffic) access(ev event.Access) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.slot(t.now())
	if ev.Verdict == event.Allow {
		b.allowed++
		return
	}
	r := ev.Reason
	if r == event.ReasonNone {
		r = "unspecified"
	}
	b.refused[r]++
}

func (t *traffic) issued(r ledger.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.slot(t.now())
	if r.Revoked {
		b.revoked++
	} else {
		b.issued++
	}
}

// series is chart data: x as Unix seconds, one named series per line.
type series struct {
	X      []int64 `json:"x"`
	Series []line  `json:"series"`
	Unit   string  `json:"unit,omitempty"`
}

type line struct {
	Label  string    `json:"label"`
	Values []float64 `json:"values"`
	Class  string    `json:"class,omitempty"` // ok, bad, info
}

// overviewTotals are the last hour's sums.
type overviewTotals struct {
	Allowed, Refused, Issued, Revoked int64
	Reasons                           []reasonCount
}

type reasonCount struct {
	Reason event.Reason
	Count  int64
}

// snapshot returns the last hour as two charts (requests by verdict and
// refusal reason; issuance) and the totals.
func (t *traffic) snapshot() (req, iss series, tot overviewTotals) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now().Truncate(bucketWidth)
	reasons := map[event.Reason]int64{}
	type row struct {
		b  *bucket
		at time.Time
	}
	rows := make([]row, 0, buckets)
	for i := buckets - 1; i >= 0; i-- {
		at := now.Add(-time.Duration(i) * bucketWidth)
		idx := int(at.Unix()/int64(bucketWidth/time.Second)) % buckets
		b := &t.b[idx]
		if !b.start.Equal(at) {
			b = nil
		}
		rows = append(rows, row{b, at})
		if b != nil {
			for r, n := range b.refused {
				reasons[r] += n
			}
		}
	}
	names := make([]event.Reason, 0, len(reasons))
	for r := range reasons {
		names = append(names, r)
	}
	slices.Sort(names)
	req.Series = append(req.Series, line{Label: "allowed", Class: "ok"})
	for _, r := range names {
		req.Series = append(req.Series, line{Label: "refused: " + string(r), Class: "bad"})
		tot.Reasons = append(tot.Reasons, reasonCount{r, reasons[r]})
	}
	iss.Series = []line{{Label: "issued", Class: "ok"}, {Label: "revoked", Class: "bad"}}
	for _, rw := range rows {
		req.X = append(req.X, rw.at.Unix())
		iss.X = append(iss.X, rw.at.Unix())
		var allowed, issued, revoked int64
		var refused map[event.Reason]int64
		if rw.b != nil {
			allowed, issued, revoked, refused = rw.b.allowed, rw.b.issued, rw.b.revoked, rw.b.refused
		}
		req.Series[0].Values = append(req.Series[0].Values, float64(allowed))
		for i, r := range names {
			req.Series[i+1].Values = append(req.Series[i+1].Values, float64(refused[r]))
			tot.Refused += refused[r]
		}
		iss.Series[0].Values = append(iss.Series[0].Values, float64(issued))
		iss.Series[1].Values = append(iss.Series[1].Values, float64(revoked))
		tot.Allowed += allowed
		tot.Issued += issued
		tot.Revoked += revoked
	}
	req.Unit, iss.Unit = "requests / min", "tokens / min"
	return req, iss, tot
}
