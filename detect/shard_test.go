package detect

import (
	"context"
	"fmt"
	"hash/maphash"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// mixedStream is ordinary traffic with attacks woven in: an enumerating
// address, a sequential walk, a not-found burst, a rotating token, forged
// and decoy requests, foreign origins, so that every detector and rule
// kind fires while shards interleave.
func mixedStream(n int) []event.Access {
	out := make([]event.Access, 0, n)
	for i := 0; i < n; i++ {
		a := ev(i)
		sub := strconv.Itoa(100000 + (i*7919)%3000)
		a.Subject, a.Token.Sub, a.Token.JTI = sub, sub, "jti-"+sub
		a.SrcIP = fmt.Sprintf("10.%d.%d.%d", i%13, (i/13)%40, 1+i%5)
		a.RequestID = "r" + strconv.Itoa(i)
		switch i % 10 {
		case 0: // enumeration from one address
			a.SrcIP = "203.0.113.9"
			a.Subject = strconv.Itoa(7000000 + i)
		case 1: // a walk from another
			a.SrcIP = "203.0.113.77"
			a.Subject = strconv.Itoa(8000000 + i/10)
		case 2: // not-found burst from one network
			a.SrcIP = "198.18.0." + strconv.Itoa(1+i%200)
			a.Status = 404
		case 3: // one token behind many networks
			a.Token.JTI = "jti-rot"
			a.SrcIP = fmt.Sprintf("100.%d.%d.1", i%50, i%7)
		case 4:
			if i%40 == 4 {
				a.Reason = event.ReasonNotIssued
				a.Token.KID = "k" + strconv.Itoa(i%3)
			}
		case 5:
			if i%50 == 5 {
				a.Country = "CN"
			}
		case 6:
			if i%60 == 6 {
				a.Reason = event.ReasonDecoySubject
			}
		}
		out = append(out, a)
	}
	return out
}

const shardRules = `rules:
  - name: cn
    expr: country == "CN"
  - name: notfound_by_ip
    expr: status == 404
    threshold: 20
    window: 10m
    group_by: src_ip
  - name: notfound_by_net
    expr: status == 404 && subject != ""
    threshold: 30
    window: 10m
    group_by: network
  - name: rot
    expr: token.jti == "jti-rot"
    threshold: 10
    window: 1h
  - name: late
    expr: time > timestamp("2025-06-24T03:00:10Z") && route.startsWith("/v1/")
    threshold: 500
    window: 1h
    group_by: asn
`

// shardSeed is shared by the engines compared: sketch estimates and the
// split of keys between shards depend on the hash seed.
var shardSeed = maphash.MakeSeed()

func shardEngine(t *testing.T, got *[]string) *Engine {
	t.Helper()
	e := newEngine(t, func(c *Config) { c.DedupWindow = 5 * time.Second })
	e.seed = shardSeed
	e.b = newBuiltins(&e.cfg, shardSeed)
	if err := e.LoadRulesFrom("shard", strings.NewReader(shardRules)); err != nil {
		t.Fatal(err)
	}
	e.Login("seed", t0.Add(-time.Hour))
	e.OnAlert(func(a Alert) { *got = append(*got, a.ID) })
	return e
}

func matchCounts(e *Engine) map[string]int64 {
	m := map[string]int64{}
	for _, r := range e.rules.Load().rules {
		m[r.Name] = r.matchCount()
	}
	return m
}

// TestBatchEqualsProcess: ProcessBatch (two shards) and Run give exactly
// what Process gives one event at a time: the same alerts with the same
// counts, first/last seen and sample order, the same incidents, the same
// delivery order, and no event lost.
func TestBatchEqualsProcess(t *testing.T) {
	evs := mixedStream(30000)
	var seqIDs []string
	seq := shardEngine(t, &seqIDs)
	for _, a := range evs {
		seq.Process(a)
	}
	want := seq.Alerts()
	if len(want) < 8 {
		t.Fatalf("stream raised only %d alerts; the test needs more", len(want))
	}
	rulesSeen := rulesOf(seq)
	for _, r := range []string{RuleEnumeration, RuleSequentialWalk, RuleUnknownSubject, RuleIPRotation,
		RuleNotIssued, RuleDecoySubject, RuleForeignOrigin, "cn", "notfound_by_ip", "notfound_by_net", "rot", "late"} {
		if rulesSeen[r] == 0 {
			t.Errorf("rule %s never fired in the sequential run", r)
		}
	}
	// Per-entity order: each alert's samples follow the feed order.
	for _, a := range want {
		for i := 1; i < len(a.Samples); i++ {
			x, _ := strconv.Atoi(a.Samples[i-1][1:])
			y, _ := strconv.Atoi(a.Samples[i][1:])
			if x >= y {
				t.Fatalf("alert %s samples out of order: %v", a.ID, a.Samples)
			}
		}
	}

	for _, size := range []int{minParallel, 700, maxBatch, 5000} {
		t.Run("ok/batch_"+strconv.Itoa(size), func(t *testing.T) {
			var ids []string
			e := shardEngine(t, &ids)
			for i := 0; i < len(evs); i += size {
				e.ProcessBatch(append([]event.Access(nil), evs[i:min(i+size, len(evs))]...))
			}
			compareEngines(t, seq, e, seqIDs, ids)
		})
	}
	t.Run("ok/run", func(t *testing.T) {
		var ids []string
		e := shardEngine(t, &ids)
		ch := make(chan event.Access, 4096)
		done := make(chan error)
		go func() { done <- e.Run(context.Background(), ch) }()
		for _, a := range evs {
			ch <- a
		}
		close(ch)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		compareEngines(t, seq, e, seqIDs, ids)
	})
}

func compareEngines(t *testing.T, want, got *Engine, wantIDs, gotIDs []string) {
	t.Helper()
	if got.Events() != want.Events() {
		t.Fatalf("events %d, want %d", got.Events(), want.Events())
	}
	if !reflect.DeepEqual(got.Alerts(), want.Alerts()) {
		ga, wa := got.Alerts(), want.Alerts()
		t.Errorf("alerts differ: %d vs %d", len(ga), len(wa))
		for i := 0; i < min(len(ga), len(wa)); i++ {
			if !reflect.DeepEqual(ga[i], wa[i]) {
				t.Fatalf("first difference at %d:\n got %+v\nwant %+v", i, ga[i], wa[i])
			}
		}
	}
	if !reflect.DeepEqual(got.Incidents(), want.Incidents()) {
		t.Error("incidents differ")
	}
	if !reflect.DeepEqual(gotIDs, wantIDs) {
		t.Errorf("delivery order differs: %d vs %d alerts", len(gotIDs), len(wantIDs))
	}
	if g, w := matchCounts(got), matchCounts(want); !reflect.DeepEqual(g, w) {
		t.Errorf("rule matches %v, want %v", g, w)
	}
}

// TestShardsSplitState checks that both shards own part of the per-key
// state, so that a batch does use both goroutines.
func TestShardsSplitState(t *testing.T) {
	e := newEngine(t, nil)
	e.ProcessBatch(mixedStream(4000))
	for i, sh := range e.b.shards {
		if sh.src[dimIP].len() == 0 || sh.rot[0].len() == 0 {
			t.Fatalf("shard %d owns no keys", i)
		}
	}
}
