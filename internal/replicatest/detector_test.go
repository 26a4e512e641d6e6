package replicatest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/natsbus"
)

// pgOf opens the deployment's PostgreSQL schema.
func pgOf(t *testing.T, d *deployment) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", pgBase+"&search_path="+d.schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A containment action raised by a detector process takes effect: the
// detector queues it in PostgreSQL, exactly one of two authorities claims
// and carries it out, and the block reaches a standalone gateway through
// the holds stream; the alert is appended to the one audit log once,
// whichever authority claims it. An authority killed holding a claim
// leaves it to the other once the lease ends.
func TestDetectorContainmentReachesGateways(t *testing.T) {
	d := newDeployment(t, direct)
	d.detect = "detect:\n  contain: true\n"
	a1, a2, admin, cl := d.twoAuthorities()
	g1 := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	det := d.detector("d1", 0, 1)
	g1.waitReady(30 * time.Second)
	det.waitReady(30 * time.Second)
	db := pgOf(t, d)

	issue := func(member string) string {
		var out struct {
			AccessToken string `json:"access_token"`
		}
		if _, err := call("POST", a2.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err != nil || out.AccessToken == "" {
			t.Fatalf("issue: %v", err)
		}
		return out.AccessToken
	}
	member := fmt.Sprint(d.pop.MemberID(3))
	insider, bystander := "203.0.113.77", "198.51.100.20"
	tok := issue(member)
	if st, why, err := accessFrom(g1, tok, member, insider); err != nil || st != 200 {
		t.Fatalf("before: %d %s %v", st, why, err)
	}
	// The insider asks for a decoy member with a live token.
	hitAt := time.Now()
	if st, why, err := accessFrom(g1, tok, decoys[0], insider); err != nil || st == 200 {
		t.Fatalf("decoy served: %d %s %v", st, why, err)
	}
	// Within a few seconds every request from the insider's address is
	// refused at the gateway, with a fresh token for an ordinary member;
	// a bystander is served.
	other := issue(fmt.Sprint(d.pop.MemberID(4)))
	var blockedAfter time.Duration
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, why, err := accessFrom(g1, other, fmt.Sprint(d.pop.MemberID(4)), insider)
		if err == nil && st != 200 && why == "blocked_source" {
			blockedAfter = time.Since(hitAt)
			t.Logf("insider blocked at the gateway %s after the decoy hit (%s)", blockedAfter.Round(time.Millisecond), why)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("insider not blocked at the gateway 15 s after the decoy hit: last %d %s %v\n%s\n%s\n%s", st, why, err, dump(db), det.tail(), a1.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, why, err := accessFrom(g1, other, fmt.Sprint(d.pop.MemberID(4)), bystander); err != nil || st != 200 {
		t.Fatalf("bystander refused: %d %s %v", st, why, err)
	}

	// One decoy alert, its actions queued once and carried out once.
	var alertID string
	if err := db.QueryRow(`SELECT id FROM detect_alerts WHERE rule = $1`, detect.RuleDecoySubject).Scan(&alertID); err != nil {
		t.Fatal(err)
	}
	blockID := "act-" + alertID + "-block_source"
	var state, owner string
	var attempts int
	if err := db.QueryRow(`SELECT state, owner, attempts FROM detect_action_queue WHERE id = $1`, blockID).Scan(&state, &owner, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != detect.QueueDone || attempts != 1 {
		t.Fatalf("%s: %s after %d attempts by %s", blockID, state, attempts, owner)
	}
	// The hold is the action's, listed alike by both authorities.
	for _, a := range []*proc{a1, a2} {
		var hs struct {
			Holds []struct {
				ID      string `json:"id"`
				Target  string `json:"target"`
				AlertID string `json:"alert_id"`
			} `json:"holds"`
		}
		if _, err := call("GET", a.url()+"/v1/containment", admin, nil, &hs); err != nil {
			t.Fatal(err)
		}
		if len(hs.Holds) != 1 || hs.Holds[0].ID != blockID || hs.Holds[0].Target != insider+"/32" || hs.Holds[0].AlertID != alertID {
			t.Fatalf("%s holds %+v", a.name, hs.Holds)
		}
	}
	// The detector's record of the actions: revoke_key refused on this
	// evidence (a decoy hit with an issued token), the rest queued and
	// carried out (the Redis ledger finds tokens by jti and subject).
	rows, err := db.Query(`SELECT id, state, error FROM detect_action_queue ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	queued := map[string]string{}
	for rows.Next() {
		var id, st, e string
		rows.Scan(&id, &st, &e)
		queued[id] = st
		t.Logf("queued %s: %s %s", id, st, e)
	}
	rows.Close()
	if _, ok := queued["act-"+alertID+"-revoke_key"]; ok {
		t.Fatalf("a key revocation was queued on a decoy hit with an issued token: %v", queued)
	}
	for _, act := range []string{"revoke_token", "force_relogin"} {
		id := "act-" + alertID + "-" + act
		proctestWait(t, 15*time.Second, id+" done", func() bool {
			var st string
			db.QueryRow(`SELECT state FROM detect_action_queue WHERE id = $1`, id).Scan(&st)
			return st == detect.QueueDone
		})
	}

	// Every alert of the detector is in the one audit log once.
	var nAlerts int
	if err := db.QueryRow(`SELECT COUNT(*) FROM detect_alerts`).Scan(&nAlerts); err != nil {
		t.Fatal(err)
	}
	waitAudited(t, db, nAlerts)
	checkAuditExact(t, d, a1, "alert", uint64(nAlerts))

	// An authority killed while it holds claims: its rows are taken over
	// once the lease ends. Simulated by a claim of a dead owner on a new
	// block, queued as a detector queues it.
	a1.kill()
	rec := detect.ActionRecord{ID: "act-al-dead-block_source", Time: time.Now().UTC(), Action: detect.ActionBlockSource,
		Target: "192.0.2.9/32", Until: time.Now().UTC().Add(time.Hour), Rule: detect.RuleDecoySubject, AlertID: "al-dead",
		Reason: "test", Evidence: map[string]string{"rule": detect.RuleDecoySubject, "src_ip": "192.0.2.9"}}
	body, _ := json.Marshal(rec)
	if _, err := db.Exec(`INSERT INTO detect_action_queue (id, body, state, owner, lease_until, attempts, created) VALUES ($1, $2, 'claimed', 'dead/1/0', $3, 1, $4)`,
		rec.ID, string(body), time.Now().Add(3*time.Second).UnixNano(), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	takenAt := time.Now()
	proctestWait(t, 30*time.Second, "the dead claimant's block carried out by a2", func() bool {
		var st, by string
		db.QueryRow(`SELECT state, owner FROM detect_action_queue WHERE id = $1`, rec.ID).Scan(&st, &by)
		return st == detect.QueueDone && by != "dead/1/0"
	})
	if since := time.Since(takenAt); since < 2*time.Second {
		t.Fatalf("taken over %s after the claim, before its lease ended", since)
	}
	proctestWait(t, 10*time.Second, "the taken-over block enforced by the gateway", func() bool {
		st, why, err := accessFrom(g1, other, fmt.Sprint(d.pop.MemberID(4)), "192.0.2.9")
		return err == nil && st != 200 && why == "blocked_source"
	})
}

// dump lists the detector's alerts and queued work, for a failure message.
func dump(db *sql.DB) string {
	var b strings.Builder
	for _, q := range []string{`SELECT id || ' ' || rule || ' ' || entity FROM detect_alerts`,
		`SELECT id || ' ' || state || ' ' || owner || ' ' || error FROM detect_action_queue`,
		`SELECT id || ' ' || action || ' ' || target || ' ' || error FROM detect_actions`} {
		rows, err := db.Query(q)
		if err != nil {
			fmt.Fprintln(&b, err)
			continue
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			fmt.Fprintln(&b, s)
		}
		rows.Close()
	}
	return b.String()
}

// waitAudited waits until n alerts are marked audited.
func waitAudited(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	proctestWait(t, 15*time.Second, fmt.Sprint(n, " alerts audited"), func() bool {
		var done int
		db.QueryRow(`SELECT COUNT(*) FROM detect_audit_queue WHERE state = 'done'`).Scan(&done)
		return done == n
	})
}

func proctestWait(t testing.TB, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkAuditExact asserts that the one audit log, verified from its
// published URL, holds exactly n entries of kind.
func checkAuditExact(t *testing.T, d *deployment, a *proc, kind string, n uint64) {
	t.Helper()
	resp, err := client.Get(a.url() + "/audit/verifier")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 512)
	m, _ := resp.Body.Read(b)
	resp.Body.Close()
	vkey := filepath.Join(t.TempDir(), "vkey")
	os.WriteFile(vkey, b[:m], 0o644)
	var res struct {
		OK    bool              `json:"ok"`
		Kinds map[string]uint64 `json:"kinds"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command(d.bin, "audit", "verify", "--url", a.url()+"/audit/", "--vkey", vkey, "--json").CombinedOutput()
		if err != nil || json.Unmarshal(out, &res) != nil || !res.OK {
			t.Fatalf("custos audit verify: %v\n%s", err, out)
		}
		if res.Kinds[kind] >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second) // a duplicate would show by now
	out, _ := exec.Command(d.bin, "audit", "verify", "--url", a.url()+"/audit/", "--vkey", vkey, "--json").CombinedOutput()
	json.Unmarshal(out, &res)
	if res.Kinds[kind] != n {
		t.Fatalf("the audit log holds %d %q entries, want exactly %d (kinds %v)", res.Kinds[kind], kind, n, res.Kinds)
	}
}

// A detector killed with SIGKILL midway through an enumeration and
// restarted raises the alert at the same event as one that never stopped:
// it rebuilds its windows from the access stream (the events its
// consumers had acknowledged within the longest window) and consumes the
// rest. A reference engine in this process, fed the same events without
// a restart, says which event that is.
func TestDetectorRestartKeepsThresholdState(t *testing.T) {
	t.Run("killed_after_acknowledging", func(t *testing.T) { restartMidCrawl(t, true) })
	// Killed while events are still being delivered: some acknowledged
	// (replayed), some delivered and not acknowledged (read back at start),
	// the rest not yet delivered.
	t.Run("killed_mid_delivery", func(t *testing.T) { restartMidCrawl(t, false) })
}

func restartMidCrawl(t *testing.T, settle bool) {
	d := newDeployment(t, direct)
	rules := filepath.Join(d.dir, "rules.yaml")
	os.WriteFile(rules, []byte(`rules:
  - name: profile_crawl
    severity: high
    expr: route == "/api/members/{id}/profile" && verdict == "allow"
    threshold: 120
    window: 1h
    group_by: src_ip
`), 0o644)
	d.detect = "detect:\n  rules: " + rules + "\n"
	det := d.detector("d1", 0, 1)
	det.waitReady(30 * time.Second)
	db := pgOf(t, d)

	ctx := context.Background()
	bus, err := natsbus.Open(ctx, natsbus.Config{URL: "nats://" + natsAddr, Prefix: d.prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	ref, err := detect.New(detect.DefaultConfig(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.LoadRules(rules); err != nil {
		t.Fatal(err)
	}
	refRaised := map[string]time.Time{}
	ref.OnAlert(func(a detect.Alert) { refRaised[a.Rule] = a.Raised })

	const src = "203.0.113.50"
	start := time.Now().Add(-time.Minute)
	evAt := func(i int) event.Access {
		m := strconv.Itoa(4000000 + i*7919) // scattered: no walk, no block filled
		return event.Access{Time: start.Add(time.Duration(i) * 100 * time.Millisecond).UTC(), RequestID: fmt.Sprintf("%s-crawl-%d", d.prefix, i),
			Method: "GET", Route: "/api/members/{id}/profile", Path: "/api/members/" + m + "/profile", Status: 200,
			SrcIP: src, UserAgent: "crawler/1", Token: event.Token{JTI: "j-crawl", KID: "k1", Sub: "1001"},
			Verdict: event.Allow, Subject: m}
	}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			ev := evAt(i)
			ref.Process(ev)
			if err := bus.PublishSync(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	const total, killAt = 300, 90
	var n int
	if settle {
		publish(0, killAt)
	} else {
		// A burst, the detector killed while it is being delivered.
		for i := 0; i < killAt; i++ {
			ev := evAt(i)
			ref.Process(ev)
			if err := bus.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if settle {
		// Every event so far is acknowledged by the detector (it has
		// counted them), and no alert is raised yet.
		waitAcked(t, d.prefix, natsbus.PartitionOf(src, natsbus.DefaultPartitions), killAt)
		db.QueryRow(`SELECT COUNT(*) FROM detect_alerts`).Scan(&n)
		if n != 0 {
			t.Fatalf("%d alerts before the threshold", n)
		}
	} else {
		floor, pending := consumerState(d.prefix, natsbus.PartitionOf(src, natsbus.DefaultPartitions))
		det.kill()
		if err := bus.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed with %d of %d events acknowledged, %d delivered and not acknowledged (the rest not delivered)", floor, killAt, pending)
	}
	det.kill()
	det.start()
	det.waitReady(30 * time.Second)
	if !strings.Contains(det.tail(), "detection state rebuilt") {
		t.Fatalf("no rebuild logged:\n%s", det.tail())
	}
	publish(killAt, total)
	want := refRaised["profile_crawl"]
	if want.IsZero() {
		t.Fatal("the reference engine raised no profile_crawl alert")
	}
	if wantIdx := int(want.Sub(start) / (100 * time.Millisecond)); wantIdx <= killAt {
		t.Fatalf("reference alert at event %d, before the kill", wantIdx)
	}
	var raised int64
	proctestWait(t, 20*time.Second, "profile_crawl alert in PostgreSQL", func() bool {
		return db.QueryRow(`SELECT raised FROM detect_alerts WHERE rule = 'profile_crawl'`).Scan(&raised) == nil
	})
	if got := time.Unix(0, raised); !got.Equal(want) {
		t.Fatalf("restarted detector raised profile_crawl at event %d, an unbroken one at event %d",
			int(got.Sub(start)/(100*time.Millisecond)), int(want.Sub(start)/(100*time.Millisecond)))
	}
	t.Logf("profile_crawl raised at event %d of %d, killed after %d, as without the kill",
		int(want.Sub(start)/(100*time.Millisecond)), total, killAt)
	// The built-in enumeration (200 distinct subjects per source, counted
	// with a sketch whose hash seed differs per process) fires too: without
	// the rebuild the restarted detector would have seen 210 subjects and,
	// near the threshold, often none.
	proctestWait(t, 10*time.Second, "enumeration alert in PostgreSQL", func() bool {
		return db.QueryRow(`SELECT COUNT(*) FROM detect_alerts WHERE rule = $1 AND entity = $2`, detect.RuleEnumeration, "ip:"+src).Scan(&n) == nil && n == 1
	})
	var rows, ids int
	db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT rule || entity) FROM detect_alerts`).Scan(&rows, &ids)
	if rows != ids {
		t.Fatalf("%d alert rows for %d rule/entity pairs", rows, ids)
	}
}

// waitAcked waits until the detector's durable consumer of partition p has
// acknowledged n messages with none pending.
func waitAcked(t testing.TB, prefix string, p, n int) {
	t.Helper()
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream := strings.ToUpper(strings.ReplaceAll(prefix, "-", "_")) + "_ACCESS"
	proctestWait(t, 20*time.Second, fmt.Sprint(n, " events acknowledged by the detector"), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, stream, fmt.Sprintf("detector-p%d", p))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Consumer >= uint64(n)
	})
}

// BenchmarkDetectorRebuild measures how fast a restarted detector process
// rebuilds its windows: 30,000 events from 500 sources are consumed, the
// detector is killed with SIGKILL and restarted, and the time from its
// start to its readiness (the replay included) is reported with the
// replay's own rate, as its log states it.
//
//	go test ./internal/replicatest -run '^$' -bench DetectorRebuild -benchtime 1x
func BenchmarkDetectorRebuild(b *testing.B) {
	d := newDeployment(b, direct)
	det := d.detector("d1", 0, 1)
	det.waitReady(30 * time.Second)
	ctx := context.Background()
	bus, err := natsbus.Open(ctx, natsbus.Config{URL: "nats://" + natsAddr, Prefix: d.prefix})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	const n = 30000
	start := time.Now().Add(-10 * time.Minute)
	perPart := map[int]int{}
	evs := make(chan event.Access, 64)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for ev := range evs {
				if err == nil {
					err = bus.PublishSync(ctx, ev)
				}
			}
			errs <- err
		}()
	}
	for i := range n {
		src := fmt.Sprintf("198.18.%d.%d", i%500/250, i%250+1)
		m := strconv.Itoa(1000 + i%20000)
		perPart[natsbus.PartitionOf(src, natsbus.DefaultPartitions)]++
		evs <- event.Access{Time: start.Add(time.Duration(i) * 10 * time.Millisecond).UTC(), RequestID: fmt.Sprintf("%s-rb-%d", d.prefix, i),
			Method: "GET", Route: "/api/members/{id}/profile", Path: "/api/members/" + m + "/profile", Status: 200,
			SrcIP: src, UserAgent: "shop-app/5.1", Token: event.Token{JTI: "j" + m, KID: "k1", Sub: m}, Verdict: event.Allow, Subject: m}
	}
	close(evs)
	for range 8 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	for p, k := range perPart {
		waitAcked(b, d.prefix, p, k)
	}
	b.ResetTimer()
	for range b.N {
		det.kill()
		t0 := time.Now()
		det.start()
		det.waitReady(5 * time.Minute)
		ready := time.Since(t0)
		var events int
		var took time.Duration
		for _, line := range strings.Split(det.tail(), "\n") {
			if strings.Contains(line, "detection state rebuilt") {
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "events="); ok {
						events, _ = strconv.Atoi(v)
					}
					if v, ok := strings.CutPrefix(f, "took="); ok {
						took, _ = time.ParseDuration(v)
					}
				}
			}
		}
		if events != n || took <= 0 {
			b.Fatalf("rebuilt %d events in %s, want %d:\n%s", events, took, n, det.tail())
		}
		b.ReportMetric(float64(events)/took.Seconds(), "replayed-events/s")
		b.ReportMetric(ready.Seconds(), "s-start-to-ready")
	}
}

// consumerState returns the acknowledgement floor and the deliveries
// awaiting acknowledgement of the detector's consumer of partition p.
func consumerState(prefix string, p int) (floor uint64, pending int) {
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		return 0, 0
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, strings.ToUpper(strings.ReplaceAll(prefix, "-", "_"))+"_ACCESS", fmt.Sprintf("detector-p%d", p))
	if err != nil {
		return 0, 0
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0
	}
	return info.AckFloor.Stream, info.NumAckPending
}
