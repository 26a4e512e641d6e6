package replicatest

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRefusalLatency measures what a refusal costs at a standalone
// gateway of a scale-out deployment (an authority and a gateway as separate
// processes on the real engines), where a refusal is answered only once
// its access event is stored in JetStream: the latency of decoy requests
// refused as decoy_subject, one at a time, and the refusals per second
// that 16 concurrent clients get; allowed requests alike for comparison
// (their events are published after the answer). Run it once:
//
//	go test ./internal/replicatest -run '^$' -bench RefusalLatency -benchtime 1x
func BenchmarkRefusalLatency(b *testing.B) {
	d := newDeployment(b, direct)
	a := d.authority("a1")
	a.waitReady(30 * time.Second)
	tf := filepath.Join(d.dir, "a1", "admin-token")
	admin := readToken(b, tf)
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		b.Fatal(err)
	}
	g := d.gateway("g1", tf, a)
	g.waitReady(30 * time.Second)
	member := fmt.Sprint(d.pop.MemberID(1))
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if _, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err != nil {
		b.Fatal(err)
	}
	tok := out.AccessToken
	refused := func(i int) bool {
		st, reason, err := accessFrom(g, tok, decoys[i%2], fmt.Sprintf("10.%d.%d.7", 1+i%200, i%250))
		return err == nil && st == 401 && reason == "decoy_subject"
	}
	allowed := func(int) bool {
		st, _, err := access(g, tok, member)
		return err == nil && st == 200
	}
	for i := 0; i < 200; i++ { // warm up: connections, the verified-token cache
		refused(i)
		allowed(i)
	}
	b.ResetTimer()
	sequential := func(name string, fn func(int) bool) {
		var lat []time.Duration
		for i := 0; i < 1000; i++ {
			start := time.Now()
			if !fn(i) {
				b.Fatalf("%s request %d: unexpected answer", name, i)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, name+"-p99-ms")
	}
	concurrent := func(name string, fn func(int) bool) {
		const window = 3 * time.Second
		var n, bad atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(window)
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; time.Now().Before(end); i += 16 {
					if fn(i) {
						n.Add(1)
					} else {
						bad.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if bad.Load() > 0 {
			b.Fatalf("%s: %d unexpected answers", name, bad.Load())
		}
		b.ReportMetric(float64(n.Load())/window.Seconds(), name+"/s")
	}
	sequential("refusal", refused)
	sequential("allowed", allowed)
	concurrent("refusals", refused)
	concurrent("allowed", allowed)
}
