package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// crawlConfig keeps few alerts and incidents and short dedup windows, so
// that a crawl evicts alerts, re-raises alerts whose window closed and
// rolls incidents over, besides updating open alerts on nearly every event.
func crawlConfig(c *Config) {
	c.MaxAlerts, c.MaxIncidents = 300, 2
	c.DedupWindow, c.IncidentWindow = 2*time.Minute, 10*time.Minute
	c.IDCoverage.Disabled = true // the digests predate it; crawlCoverage has it on
}

// crawlCoverage is crawlConfig with id_coverage on.
func crawlCoverage(c *Config) {
	crawlConfig(c)
	c.IDCoverage.Disabled = false
}

// crawlTinyRing evicts alerts while their dedup window is still open.
func crawlTinyRing(c *Config) {
	c.MaxAlerts, c.MaxIncidents = 30, 2
	c.DedupWindow, c.IncidentWindow = time.Hour, 10*time.Minute
	c.IDCoverage.Disabled = true
}

// crawlRun feeds a crawl to a fresh engine that tracks what a store
// would be written (without one).
func crawlRun(t *testing.T, cfg func(*Config), feed func(e *Engine, evs []event.Access)) (*Engine, []string) {
	t.Helper()
	var ids []string
	e := newEngine(t, cfg)
	e.persist = true
	e.seed = shardSeed
	e.b = newBuiltins(&e.cfg, shardSeed)
	e.Login("seed", t0.Add(-time.Hour))
	e.OnAlert(func(a Alert) { ids = append(ids, a.ID+" "+a.Incident) })
	feed(e, crawlEvents(60000))
	return e, ids
}

// digest summarises what an engine holds: every alert (counts, first and
// last seen, samples, incident) and incident, the delivery order, and the
// alerts and incidents marked for writing.
func digest(t *testing.T, e *Engine, ids []string) string {
	t.Helper()
	var da, di []string
	for a := range e.dirtyA {
		da = append(da, a.ID)
	}
	for i := range e.dirtyI {
		di = append(di, i.ID+" "+i.LastSeen.String())
	}
	slices.Sort(da)
	slices.Sort(di)
	b, err := json.Marshal(struct {
		A      []Alert
		I      []Incident
		D      []string
		DA, DI []string
	}{e.Alerts(), e.Incidents(), ids, da, di})
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// TestCrawlBatchEqualsProcess: a crawl in which nearly every event matches
// detectors whose alerts are open gives, through ProcessBatch, exactly the
// alerts (counts, first/last seen, samples), incidents and delivery order
// of feeding the events one at a time; and both give what the engine gave
// before matches of open alerts were cached (the digest below was taken
// from that engine with this stream and configuration, and taken again when
// walks got their time span and were no longer followed per ASN and user
// agent by default, and when alert ids came to name their dedup window
// instead of their first event).
func TestCrawlBatchEqualsProcess(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"ring300", crawlConfig, "6e5f4c9338d51a6a"},
		{"ring30", crawlTinyRing, "3d9e7bfbc4e7cc2f"},
		// No digest: id_coverage's summaries carry sketch estimates, which
		// follow the per-process hash seed; batches must still equal
		// one-at-a-time processing.
		{"ring300_coverage", crawlCoverage, ""},
	} {
		t.Run(c.name, func(t *testing.T) { crawlEquals(t, c.cfg, c.want) })
	}
}

func crawlEquals(t *testing.T, cfg func(*Config), want string) {
	seq, seqIDs := crawlRun(t, cfg, func(e *Engine, evs []event.Access) {
		for _, a := range evs {
			e.Process(a)
		}
	})
	var total int64
	rules, incs := map[string]bool{}, map[string]bool{}
	for _, id := range seqIDs {
		incs[id[strings.IndexByte(id, ' ')+1:]] = true
	}
	for _, a := range seq.Alerts() {
		total += a.Count
		rules[a.Rule] = true
	}
	if len(seqIDs) <= seq.cfg.MaxAlerts || len(incs) <= seq.cfg.MaxIncidents || total < 100 {
		t.Fatalf("%d alerts raised, %d incidents, %d matches: the stream must evict alerts and incidents and match often",
			len(seqIDs), len(incs), total)
	}
	if want == "" && !rules[RuleIDCoverage] {
		t.Errorf("no id_coverage alert in the crawl (rules %v)", rules)
	}
	if got := digest(t, seq, seqIDs); want != "" && got != want {
		t.Errorf("digest %s, want %s", got, want)
	}
	for _, size := range []int{minParallel, 1000, 4096} {
		t.Run("batch_"+strconv.Itoa(size), func(t *testing.T) {
			e, ids := crawlRun(t, cfg, func(e *Engine, evs []event.Access) {
				for i := 0; i < len(evs); i += size {
					e.ProcessBatch(append([]event.Access(nil), evs[i:min(i+size, len(evs))]...))
				}
			})
			compareEngines(t, seq, e, seqIDs, ids)
			if g, w := digest(t, e, ids), digest(t, seq, seqIDs); g != w {
				t.Errorf("digest %s, want %s", g, w)
			}
		})
	}
}
