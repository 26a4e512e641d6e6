package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/store/storetest"
)

// Four claimers racing on one queue: every row is claimed by exactly one of
// them and ends done; a row done is never claimed again.
func TestWorkQueueClaimOnce(t *testing.T) {
	db := storetest.Postgres(t)
	ctx := context.Background()
	q, err := NewWorkQueue(ctx, db, ActionQueue)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		if err := enqueue(ctx, db, ActionQueue, fmt.Sprintf("act-%03d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Queued twice: still one row.
	if err := enqueue(ctx, db, ActionQueue, "act-000", []byte(`{"again":true}`)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	claimedBy := map[string][]string{}
	var wg sync.WaitGroup
	for w := range 4 {
		owner := fmt.Sprint("authority-", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cs, err := q.Claim(ctx, owner, time.Minute, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(cs) == 0 {
					return
				}
				for _, c := range cs {
					mu.Lock()
					claimedBy[c.ID] = append(claimedBy[c.ID], owner)
					mu.Unlock()
					if string(c.Body) != `{}` {
						t.Errorf("%s body %s", c.ID, c.Body)
					}
					if err := q.Done(ctx, c.ID, owner); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(claimedBy) != n {
		t.Fatalf("%d rows claimed, want %d", len(claimedBy), n)
	}
	owners := map[string]bool{}
	for id, by := range claimedBy {
		if len(by) != 1 {
			t.Errorf("%s claimed %d times: %v", id, len(by), by)
		}
		owners[by[0]] = true
	}
	if len(owners) < 2 {
		t.Logf("only %v claimed anything (no contention this run)", owners)
	}
	var done int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM detect_action_queue WHERE state = 'done' AND attempts = 1`).Scan(&done); err != nil || done != n {
		t.Fatalf("%d rows done after one attempt, %v", done, err)
	}
	if cs, err := q.Claim(ctx, "late", time.Minute, 100); err != nil || len(cs) != 0 {
		t.Fatalf("claimed %d done rows, %v", len(cs), err)
	}
}

// A claimant that dies keeps its rows only until its lease ends; then
// another takes them, and the first can no longer settle them. A row
// handed back for a retry is not claimed before it is due; a failed one
// never again.
func TestWorkQueueLeaseTakeover(t *testing.T) {
	db := storetest.Postgres(t)
	ctx := context.Background()
	q, err := NewWorkQueue(ctx, db, AuditQueue)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"al-1", "al-2"} {
		if err := enqueue(ctx, db, AuditQueue, id, []byte(`{"id":"`+id+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	const lease = 300 * time.Millisecond
	a, err := q.Claim(ctx, "a1", lease, 10)
	if err != nil || len(a) != 2 {
		t.Fatalf("a1 claimed %d, %v", len(a), err)
	}
	if b, err := q.Claim(ctx, "a2", lease, 10); err != nil || len(b) != 0 {
		t.Fatalf("a2 claimed %d rows under a live lease, %v", len(b), err)
	}
	time.Sleep(lease + 50*time.Millisecond)
	b, err := q.Claim(ctx, "a2", lease, 10)
	if err != nil || len(b) != 2 || b[0].Attempts != 2 {
		t.Fatalf("a2 took over %+v, %v", b, err)
	}
	if err := q.Done(ctx, "al-1", "a1"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a1 settled a row taken over: %v", err)
	}
	if st, owner, _, ok, err := q.State(ctx, "al-1"); err != nil || !ok || st != QueueClaimed || owner != "a2" {
		t.Fatalf("al-1 %s by %s (%v %v)", st, owner, ok, err)
	}
	if err := q.Done(ctx, "al-1", "a2"); err != nil {
		t.Fatal(err)
	}
	if err := q.Retry(ctx, "al-2", "a2", errors.New("audit log unavailable"), time.Now().Add(lease)); err != nil {
		t.Fatal(err)
	}
	if c, err := q.Claim(ctx, "a1", lease, 10); err != nil || len(c) != 0 {
		t.Fatalf("claimed %d rows before they were due, %v", len(c), err)
	}
	time.Sleep(lease + 50*time.Millisecond)
	c, err := q.Claim(ctx, "a1", lease, 10)
	if err != nil || len(c) != 1 || c[0].ID != "al-2" || c[0].Attempts != 3 {
		t.Fatalf("retry claimed %+v, %v", c, err)
	}
	if err := q.Fail(ctx, "al-2", "a1", errors.New("gave up")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lease + 50*time.Millisecond)
	if c, err := q.Claim(ctx, "a2", lease, 10); err != nil || len(c) != 0 {
		t.Fatalf("claimed %d settled rows, %v", len(c), err)
	}
	if st, _, _, _, _ := q.State(ctx, "al-2"); st != QueueFailed {
		t.Fatalf("al-2 is %s", st)
	}
}

// A detector's engine queues each containment action once under its id,
// planned and limited as anywhere else (a decoy hit with an issued token
// never queues a key revocation), and each alert once for the audit log,
// however often the alert is raised again (a second instance, a
// redelivery) and flushed.
func TestQueuedContainmentAndAudit(t *testing.T) {
	db := storetest.Postgres(t)
	ctx := context.Background()
	open := func() *Engine {
		e := newEngine(t, proportional)
		if err := e.SetStore(ctx, db); err != nil {
			t.Fatal(err)
		}
		e.SetContainment(QueuedContainment{db})
		e.QueueAudit()
		return e
	}
	hit := decoyHit(0, "jA", "1001", "198.51.100.7")
	for range 2 {
		e := open()
		for i := range 3 {
			h := hit
			h.Time = h.Time.Add(time.Duration(i) * time.Second)
			if err := e.ProcessDurable(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	alerts, err := StoredAlerts(ctx, db, 10)
	if err != nil || len(alerts) != 1 {
		t.Fatalf("alerts %+v, %v", alerts, err)
	}
	id := alerts[0].ID
	q, err := NewWorkQueue(ctx, db, ActionQueue)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := q.Claim(ctx, "a1", time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cs {
		r, err := ParseQueuedAction(c.Body)
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != c.ID || r.AlertID != id || r.DryRun || r.Evidence["jti"] != "jA" {
			t.Errorf("queued %+v", r)
		}
		got = append(got, string(r.Action)+" "+r.Target)
	}
	slices.Sort(got)
	want := []string{"block_source 198.51.100.7/32", "force_relogin 1001", "revoke_token jA"}
	if !slices.Equal(got, want) {
		t.Fatalf("queued %q, want %q", got, want)
	}
	aq, err := NewWorkQueue(ctx, db, AuditQueue)
	if err != nil {
		t.Fatal(err)
	}
	as, err := aq.Claim(ctx, "a1", time.Minute, 100)
	if err != nil || len(as) != 1 || as[0].ID != id {
		t.Fatalf("audit queue %+v, %v", as, err)
	}
	// An authority's own engine (no QueueAudit) queues nothing: it
	// appends its alerts itself.
	own := newEngine(t, nil)
	if err := own.SetStore(ctx, db); err != nil {
		t.Fatal(err)
	}
	own.Process(notIssued(0, "k9"))
	if err := own.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM detect_audit_queue`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d audit rows, %v", n, err)
	}
}

// What an authority refuses to carry out from the queue: anything but the
// action and target the record's own evidence plans.
func TestParseQueuedAction(t *testing.T) {
	e := newEngine(t, proportional)
	e.SetContainment(&recorder{})
	e.Process(decoyHit(0, "jA", "1001", "198.51.100.7"))
	var block, relogin ActionRecord
	for _, x := range e.Actions() {
		switch x.Action {
		case ActionBlockSource:
			block = x
		case ActionForceRelogin:
			relogin = x
		}
	}
	enc := func(r ActionRecord) []byte { b, _ := json.Marshal(r); return b }
	for _, ok := range []ActionRecord{block, relogin} {
		if r, err := ParseQueuedAction(enc(ok)); err != nil || r.Target != ok.Target {
			t.Fatalf("refused %+v: %v", ok, err)
		}
	}
	bad := map[string]ActionRecord{}
	r := block
	r.Target = "0.0.0.0/0"
	bad["block of another network"] = r
	r = block
	r.Until = r.Until.Add(30 * 24 * time.Hour)
	bad["block longer than the policy bound"] = r
	r = block
	r.Action, r.Target, r.ID = ActionRevokeKey, "k1", "act-"+block.AlertID+"-revoke_key"
	bad["key revoked on a decoy hit"] = r
	r = relogin
	r.Target = "1002"
	bad["relogin of another subject"] = r
	r = relogin
	r.DryRun = true
	bad["dry run"] = r
	r = relogin
	r.Evidence = map[string]string{"rule": relogin.Rule, "token_sub": "1001", "reported": "cloudfront"}
	bad["a log's claim"] = r
	for name, r := range bad {
		if _, err := ParseQueuedAction(enc(r)); err == nil {
			t.Errorf("%s: accepted %+v", name, r)
		}
	}
	for _, body := range []string{``, `{`, `{"id":"x","action":"launch","target":"t"}`, `{"id":"x","action":"revoke_token"}`} {
		if _, err := ParseQueuedAction([]byte(body)); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
}

func FuzzParseQueuedAction(f *testing.F) {
	f.Add([]byte(`{"id":"act-al-1-block_source","time":"2030-01-01T00:00:00Z","action":"block_source","target":"198.51.100.7/32","until":"2030-01-01T01:00:00Z","rule":"decoy_subject","alert_id":"al-1","evidence":{"rule":"decoy_subject","src_ip":"198.51.100.7"}}`))
	f.Add([]byte(`{"id":"act-2","action":"revoke_token","target":"j"}`))
	f.Add([]byte(`{"id":"act-al-1-block_country","time":"2030-01-01T00:00:00Z","action":"block_country","target":"US","until":"2030-01-02T00:00:00Z","rule":"foreign_spread","alert_id":"al-1","evidence":{"rule":"foreign_spread","country":"US","jti":"j1"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseQueuedAction(b)
		if err != nil {
			return
		}
		if !r.Action.valid() || r.ID == "" || r.Target == "" || r.DryRun {
			t.Fatalf("accepted %+v", r)
		}
		if r.Action == ActionRevokeKey && !keyEvidence(&Alert{Attrs: r.Evidence}) {
			t.Fatalf("key revocation without its evidence: %+v", r)
		}
		if r.Action == ActionBlockCountry && (!IsCountryCode(r.Target) || r.Evidence["reason"] != "" || r.Evidence["jti"] == "" || r.Evidence["reported"] != "") {
			t.Fatalf("country block without its evidence: %+v", r)
		}
	})
}
