package detect

import (
	"strconv"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// crawlRoutes are the pages a crawl of forged tokens walks, one crawler each.
var crawlRoutes = [...]string{
	"/v1/members/{id}", "/v1/members/{id}/addresses",
	"/v1/members/{id}/addresses/{addr}", "/v1/members/{id}/orders",
}

var crawlUAs = [...]string{"python-requests/2.31.0", "Scrapy/2.11.2 (+https://scrapy.org)", "Go-http-client/1.1"}

// crawlEvents is the replay's situation: a crawl of forged tokens (signed by
// a key revoked before the crawl, each token new) from rotating foreign
// addresses (100 requests each, over 512 /24 networks) walking sequential
// member IDs on four pages at once, with one ordinary request in ten. Nearly
// every event matches several detectors whose alerts are already open.
func crawlEvents(n int) []event.Access {
	out := make([]event.Access, n)
	var cursor [len(crawlRoutes)]int
	var sent [len(crawlRoutes)]int
	for i := range out {
		id := "r" + strconv.Itoa(i)
		t := t0.Add(time.Duration(i) * 50 * time.Millisecond)
		if i%10 == 9 {
			m := strconv.Itoa(1 + (i*7919)%5_000_000)
			out[i] = event.Access{
				Time: t, Gateway: "gw", RequestID: id, Method: "GET", Route: crawlRoutes[i%3], Status: 200,
				SrcIP: "10." + strconv.Itoa(i%200) + "." + strconv.Itoa((i/200)%250) + ".7", Country: "KR", ASN: 4766,
				UserAgent: "shop-app/5.1", Token: event.Token{JTI: "s" + m, KID: "k-live", Sub: m, IAT: t.Unix() - 60},
				Verdict: event.Allow, Subject: m, DataClasses: []string{event.ClassName, event.ClassAddress},
			}
			continue
		}
		c := i % len(crawlRoutes)
		cursor[c]++
		blk := sent[c] / 100
		sent[c]++
		g := blk*len(crawlRoutes) + c // the address: a new one for every block
		net := g % 512
		m := strconv.Itoa(cursor[c])
		out[i] = event.Access{
			Time: t, Gateway: "gw", RequestID: id, Method: "GET", Route: crawlRoutes[c], Status: 401,
			SrcIP:   "45." + strconv.Itoa(net/256+10) + "." + strconv.Itoa(net%256) + "." + strconv.Itoa(1+(g/512)%250),
			Country: [...]string{"CN", "SG", "US", "NL"}[net%4], ASN: uint32(64500 + net%16),
			UserAgent: crawlUAs[g%len(crawlUAs)],
			Token:     event.Token{JTI: "f" + strconv.Itoa(i), KID: "k-stolen", Sub: m, IAT: t.Unix() - 5},
			Verdict:   event.Deny, Reason: event.ReasonRevokedKey, Subject: m,
			DataClasses: []string{event.ClassName, event.ClassAddress},
		}
	}
	return out
}

const crawlN = 1 << 18

// crawlEngine has the default configuration with a login fed, so that
// token_without_login judges.
func crawlEngine(b *testing.B) *Engine { return benchEngine(b, false) }

// crawlWarm is how many events run before the clock starts: enough for
// the ring of alerts (max_alerts, 10,000 by default) to be full, as it is
// for most of a replay, so that raising an alert evicts one.
const crawlWarm = 3 * crawlN

// crawlBatches feeds events k0 to k1 (times moved on each pass over evs)
// through ProcessBatch in batches of 4,096, as the replay's events mode does.
func crawlBatches(e *Engine, evs, batch []event.Access, k0, k1 int) {
	span := time.Duration(crawlN) * 50 * time.Millisecond
	for i := k0; i < k1; i += len(batch) {
		n := min(len(batch), k1-i)
		for j := 0; j < n; j++ {
			k := i + j
			batch[j] = evs[k%crawlN]
			batch[j].Time = batch[j].Time.Add(time.Duration(k/crawlN) * span)
		}
		e.ProcessBatch(batch[:n])
	}
}

// BenchmarkCrawlBatch: the crawl through ProcessBatch (two shards).
func BenchmarkCrawlBatch(b *testing.B) {
	e := crawlEngine(b)
	evs := crawlEvents(crawlN)
	batch := make([]event.Access, 4096)
	crawlBatches(e, evs, batch, 0, crawlWarm)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	crawlBatches(e, evs, batch, crawlWarm, crawlWarm+b.N)
	reportRates(b, b.N, time.Since(start), cpuTime()-cpu0)
	b.StopTimer()
	if len(e.Alerts()) < e.cfg.MaxAlerts {
		b.Fatalf("%d alerts: the ring is not full", len(e.Alerts()))
	}
}

// BenchmarkCrawl feeds the same crawl one event at a time (Process), the
// path of a world whose containment must act before the next request.
func BenchmarkCrawl(b *testing.B) {
	e := crawlEngine(b)
	evs := crawlEvents(crawlN)
	crawlBatches(e, evs, make([]event.Access, 4096), 0, crawlWarm)
	span := time.Duration(crawlN) * 50 * time.Millisecond
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for k := crawlWarm; k < crawlWarm+b.N; k++ {
		x := evs[k%crawlN]
		x.Time = x.Time.Add(time.Duration(k/crawlN) * span)
		e.Process(x)
	}
	reportRates(b, b.N, time.Since(start), cpuTime()-cpu0)
}
