package replicatest

import (
	"database/sql"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTwoReplicas measures the multi-process deployment of
// TestHighAvailability (two authorities, two standalone gateways, every
// process on the real engines) with the load generator on the same machine:
// issuance throughput over both authorities, gateway throughput over both
// gateways with tokens they already verified, and how long a revocation made
// at one authority takes to be refused by the gateway following the other.
// Run it once:
//
//	go test ./internal/replicatest -run '^$' -bench TwoReplicas -benchtime 1x
func BenchmarkTwoReplicas(b *testing.B) {
	d := newDeployment(b, direct)
	a1 := d.authority("a1")
	a1.waitReady(30 * time.Second)
	admin := readToken(b, filepath.Join(d.dir, "a1", "admin-token"))
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		b.Fatal(err)
	}
	a2 := d.authority("a2")
	a2.waitReady(30 * time.Second)
	tf := filepath.Join(d.dir, "a1", "admin-token")
	g1, g2 := d.gateway("g1", tf, a1, a2), d.gateway("g2", tf, a2, a1)
	g1.waitReady(30 * time.Second)
	g2.waitReady(30 * time.Second)
	auths, gws := []*proc{a1, a2}, []*proc{g1, g2}
	member := func() string { return fmt.Sprint(d.pop.MemberID(1 + uint64(mrand.IntN(int(d.pop.Members))))) }
	type tok struct{ tok, member string }
	issue := func(a *proc) (tok, error) {
		m := member()
		var out struct {
			AccessToken string `json:"access_token"`
		}
		_, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": m, "audience": "shop-api"}, &out)
		return tok{out.AccessToken, m}, err
	}
	run := func(workers int, d time.Duration, fn func(w int) bool) (ok, failed int64) {
		var okN, failN atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					if fn(w) {
						okN.Add(1)
					} else {
						failN.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return okN.Load(), failN.Load()
	}
	b.ResetTimer()

	// Issuance over both authorities.
	const window = 5 * time.Second
	var mu sync.Mutex
	var toks []tok
	n, fails := run(16, window, func(w int) bool {
		x, err := issue(auths[w%2])
		if err != nil {
			return false
		}
		mu.Lock()
		toks = append(toks, x)
		mu.Unlock()
		return true
	})
	b.ReportMetric(float64(n)/window.Seconds(), "tokens/s")
	if fails > 0 {
		b.Logf("issuance: %d failed", fails)
	}

	// Gateways: tokens verified once, then requests over both gateways.
	warm := toks[:min(len(toks), 256)]
	for _, x := range warm {
		for _, g := range gws {
			access(g, x.tok, x.member)
		}
	}
	n, fails = run(32, window, func(w int) bool {
		x := warm[mrand.IntN(len(warm))]
		st, _, err := access(gws[w%2], x.tok, x.member)
		return err == nil && st == 200
	})
	b.ReportMetric(float64(n)/window.Seconds(), "requests/s")
	if fails > 0 {
		b.Logf("gateway: %d refused or failed", fails)
	}

	// Revocation at one authority, refused by the gateway following the other.
	var lat []time.Duration
	for i := 0; i < 200; i++ {
		x, err := issue(auths[i%2])
		if err != nil {
			b.Fatal(err)
		}
		g := gws[(i+1)%2]
		for {
			if st, _, _ := access(g, x.tok, x.member); st == 200 {
				break
			}
		}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			call("POST", auths[i%2].url()+"/v1/tokens/revoke", cl.Secret, "token="+url.QueryEscape(x.tok), nil)
			close(done)
		}()
		for {
			if st, reason, _ := access(g, x.tok, x.member); st == 401 && reason == "revoked_token" {
				break
			}
			if time.Since(start) > 5*time.Second {
				b.Fatal("a revocation did not reach the other gateway in 5 s")
			}
		}
		lat = append(lat, time.Since(start))
		<-done
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "revoke-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "revoke-p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "revoke-max-ms")
}

// BenchmarkDetectorLag measures detection in scale-out on the multi-process
// deployment (an authority, a standalone gateway, two detector instances):
// from a request refused at the gateway to its alert's row in PostgreSQL,
// one request at a time, each from a source of its own so that each raises
// an alert (a rule grouped by source). The time includes the gateway's
// publication on NATS, the detector's consumption and the write. Run it once:
//
//	go test ./internal/replicatest -run '^$' -bench DetectorLag -benchtime 1x
func BenchmarkDetectorLag(b *testing.B) {
	d := newDeployment(b, direct)
	rules := filepath.Join(d.dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules:\n  - name: decoy_by_source\n    expr: reason == 'decoy_subject'\n    group_by: src_ip\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	d.detect = "detect:\n  rules: " + rules + "\n"
	a1 := d.authority("a1")
	a1.waitReady(30 * time.Second)
	admin := readToken(b, filepath.Join(d.dir, "a1", "admin-token"))
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		b.Fatal(err)
	}
	g1 := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1)
	det1, det2 := d.detector("d1", 0, 2), d.detector("d2", 1, 2)
	for _, p := range []*proc{g1, det1, det2} {
		p.waitReady(30 * time.Second)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if _, err := call("POST", a1.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": fmt.Sprint(d.pop.MemberID(1)), "audience": "shop-api"}, &tok); err != nil {
		b.Fatal(err)
	}
	pg, err := sql.Open("pgx", pgBase+"&search_path="+d.schema)
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	rows := func() int {
		var n int
		if err := pg.QueryRow(`SELECT COUNT(*) FROM detect_alerts WHERE rule = 'decoy_by_source'`).Scan(&n); err != nil {
			return -1 // the detectors have not made the table yet
		}
		return n
	}
	// Warm up: the first alert waits for the detectors' consumers.
	const n = 200
	var lat []time.Duration
	for i := 0; i <= n; i++ {
		before := rows()
		start := time.Now()
		if st, reason, err := accessFrom(g1, tok.AccessToken, decoys[0], fmt.Sprintf("10.%d.%d.7", i/250, i%250)); err != nil || reason != "decoy_subject" {
			b.Fatalf("decoy request: %d %q %v", st, reason, err)
		}
		for rows() <= before {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("no alert for request %d within 30 s", i)
			}
			time.Sleep(time.Millisecond)
		}
		if i > 0 {
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "lag-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "lag-p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "lag-max-ms")
}
