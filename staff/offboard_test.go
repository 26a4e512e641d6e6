package staff

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
)

// The breach timeline: the key custodian's contract ends 2025-01-01 00:00.
func TestCoupangTimeline(t *testing.T) {
	end := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ttl := 15 * time.Minute
	cases := []struct {
		name       string
		policy     OffboardingPolicy
		revokeBy   time.Time
		graceUntil time.Time // the old key must still verify before this
	}{
		{"ok/revoke-at-once", PolicyRevoke, end.Add(time.Minute), time.Time{}},
		{"ok/grace-until-max-ttl", PolicyGrace, end.Add(time.Minute).Add(ttl), end.Add(ttl)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Policy, c.MaxTokenTTL = tc.policy, ttl })
			ctx := context.Background()
			e.clock.Set(time.Date(2022, 11, 16, 9, 0, 0, 0, time.UTC))
			dev, err := e.d.AddPerson(ctx, Person{UserName: "dev@shop.example", Kind: Contractor, End: &end}, "admin:alice")
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Set(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC))
			e.keys.add("abused", keys.Active, e.clock.Now())
			if err := e.d.AddCustodian(ctx, SigningKey, "abused", dev.ID, Administer, "admin:alice"); err != nil {
				t.Fatal(err)
			}
			e.creds.held[dev.ID] = 2

			// Sweeps every minute from 23:58 on.
			for e.clock.Set(end.Add(-2 * time.Minute)); e.clock.Now().Before(end.Add(ttl + 5*time.Minute)); e.clock.Add(time.Minute) {
				if err := e.d.Sweep(ctx); err != nil {
					t.Fatal(err)
				}
				now := e.clock.Now()
				if now.Before(end) && len(e.keys.calls) > 0 {
					t.Fatalf("acted before the end date: %+v", e.keys.calls)
				}
				if !tc.graceUntil.IsZero() && now.Before(tc.graceUntil) && e.keys.state("abused") == keys.Revoked {
					t.Fatalf("revoked at %s, inside the grace period", now)
				}
			}
			rot := e.keys.callsOf("rotate")
			if len(rot) != 1 || rot[0].at.After(end.Add(time.Minute)) {
				t.Fatalf("rotation: %+v, want one by %s", rot, end.Add(time.Minute))
			}
			rev := e.keys.callsOf("revoke")
			if len(rev) != 1 || rev[0].kid != "abused" || rev[0].at.After(tc.revokeBy) {
				t.Fatalf("revocation: %+v, want abused by %s", rev, tc.revokeBy)
			}
			if e.keys.state(rot[0].kid) != keys.Active {
				t.Fatal("the fresh key is not active")
			}
			if len(e.creds.got) != 1 || e.creds.got[0] != dev.ID || len(e.creds.held) != 0 {
				t.Fatalf("credentials: %v", e.creds.got)
			}
			p, _ := e.d.Person(ctx, dev.ID)
			if p.Status != Departed || !p.DepartedAt.Equal(end) {
				t.Fatalf("person %+v", p)
			}
			if err := e.d.CheckActor(ctx, dev.ID); !errors.Is(err, ErrDeparted) {
				t.Fatalf("CheckActor: %v", err)
			}
			if e.alerts.count(RuleDepartedCredentialUse) != 1 || e.alerts.count(RuleStaffDeparted) != 1 {
				t.Fatalf("alerts %+v", e.alerts.alerts)
			}
			fs, err := e.d.Hygiene(ctx, mustList(t, e.keys), HygienePolicy{})
			if err != nil || len(fs) != 1 || fs[0].Kind != FindingNoLivingCustodian || fs[0].KID != rot[0].kid {
				t.Fatalf("hygiene after offboarding: %+v %v", fs, err)
			}
		})
	}
}

func mustList(t *testing.T, k KeyOps) []keys.Key {
	t.Helper()
	ks, err := k.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestEndDateSweep(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	end := t0.Add(48 * time.Hour)
	a, _ := e.d.AddPerson(ctx, Person{UserName: "a", End: &end, Groups: []string{KeyAdminsGroup}}, "admin:alice")
	b, _ := e.d.AddPerson(ctx, Person{UserName: "b", Groups: []string{KeyAdminsGroup}}, "admin:alice")
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))
	cases := []struct {
		name  string
		at    time.Time
		wantA Status
	}{
		{"ok/before-end", end.Add(-time.Second), Active},
		{"ok/at-end", end, Departed},
		{"ok/after-end", end.Add(time.Hour), Departed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.clock.Set(tc.at)
			if err := e.d.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			pa, _ := e.d.Person(ctx, a.ID)
			pb, _ := e.d.Person(ctx, b.ID)
			if pa.Status != tc.wantA || pb.Status != Active {
				t.Fatalf("a %s b %s", pa.Status, pb.Status)
			}
		})
	}
	if n := len(e.keys.callsOf("rotate")); n != 1 {
		t.Fatalf("rotations %d, want exactly one", n)
	}
	// b still administers the fresh key through the group.
	fs, err := e.d.Hygiene(ctx, mustList(t, e.keys), HygienePolicy{})
	if err != nil || len(fs) != 0 {
		t.Fatalf("findings %+v %v", fs, err)
	}
}

func TestOffboardingRetried(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.keys.failRotat = 1
	p, _ := e.d.AddPerson(ctx, Person{UserName: "ops", Groups: []string{KeyAdminsGroup}}, "admin:alice")
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))
	if err := e.d.Depart(ctx, p.ID, "admin:alice", "dismissed"); err != nil {
		t.Fatal(err) // the departure itself is recorded; offboarding failed
	}
	if e.alerts.count(RuleOffboardingFailed) != 1 || e.keys.state("k1") != keys.Active {
		t.Fatalf("want a failure alert and k1 untouched: %+v", e.alerts.alerts)
	}
	if pend, _ := e.d.pendingOffboardings(ctx); len(pend) != 1 {
		t.Fatalf("pending %v", pend)
	}
	e.clock.Add(time.Minute)
	if err := e.d.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if e.keys.state("k1") != keys.Revoked || len(e.keys.callsOf("rotate")) != 1 {
		t.Fatalf("retry did not offboard: %+v", e.keys.calls)
	}
	if err := e.d.Sweep(ctx); err != nil || len(e.keys.callsOf("rotate")) != 1 {
		t.Fatalf("a second sweep rotated again: %v %+v", err, e.keys.calls)
	}
}

func TestOffboardingWithoutKeyOpsFailsClosed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Keys = nil })
	ctx := context.Background()
	p, _ := e.d.AddPerson(ctx, Person{UserName: "ops"}, "admin:alice")
	if err := e.d.AddCustodian(ctx, SigningKey, "k1", p.ID, Operate, "admin:alice"); err != nil {
		t.Fatal(err)
	}
	_ = e.d.Depart(ctx, p.ID, "admin:alice", "left")
	if err := e.d.Sweep(ctx); !errors.Is(err, ErrNoKeyOps) {
		t.Fatalf("Sweep: %v", err)
	}
	if pend, _ := e.d.pendingOffboardings(ctx); len(pend) != 1 {
		t.Fatal("offboarding marked done without key operations")
	}
}

func TestCheckActor(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	end := t0.Add(time.Hour)
	live, _ := e.d.AddPerson(ctx, Person{UserName: "live"}, "admin:alice")
	ending, _ := e.d.AddPerson(ctx, Person{UserName: "ending", End: &end}, "admin:alice")
	gone, _ := e.d.AddPerson(ctx, Person{UserName: "gone"}, "admin:alice")
	_ = e.d.Depart(ctx, gone.ID, "admin:alice", "left")
	e.clock.Set(end) // no sweep yet: the end date alone must refuse
	cases := []struct {
		name, id string
		want     error
	}{
		{"ok/live", live.ID, nil},
		{"fail/end-date-passed", ending.ID, ErrDeparted},
		{"fail/departed", gone.ID, ErrDeparted},
		{"fail/unknown", "nobody", ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.alerts.count(RuleDepartedCredentialUse)
			err := e.d.CheckActor(ctx, tc.id)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			raised := e.alerts.count(RuleDepartedCredentialUse) - before
			if (tc.want == ErrDeparted) != (raised == 1) {
				t.Fatalf("alerts raised %d", raised)
			}
		})
	}
	for _, a := range e.alerts.alerts {
		if a.rule == RuleDepartedCredentialUse && a.severity != "critical" {
			t.Fatalf("severity %s", a.severity)
		}
	}
}

func TestHygiene(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	alice, _ := e.d.AddPerson(ctx, Person{UserName: "alice"}, "admin:root")
	bob, _ := e.d.AddPerson(ctx, Person{UserName: "bob"}, "admin:root")
	ks := []keys.Key{
		{KID: "old", State: keys.Active, CreatedAt: t0.Add(-200 * 24 * time.Hour)},
		{KID: "orphan", State: keys.VerifyOnly, CreatedAt: t0},
		{KID: "bobs", State: keys.Active, CreatedAt: t0},
		{KID: "gone", State: keys.Revoked, CreatedAt: t0},
	}
	for _, kid := range []string{"old", "bobs"} {
		if err := e.d.AddCustodian(ctx, SigningKey, kid, alice.ID, Administer, "admin:root"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.AddCustodian(ctx, SigningKey, "bobs", bob.ID, Operate, "admin:root"); err != nil {
		t.Fatal(err)
	}
	e.keys.keys = nil // bob's departure has no live keys in custody to rotate here
	if err := e.d.Depart(ctx, bob.ID, "admin:root", "left"); err != nil {
		t.Fatal(err)
	}
	fs, err := e.d.Hygiene(ctx, ks, HygienePolicy{MaxKeyAge: 90 * 24 * time.Hour, MaxKeysPerCustodian: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []Finding{
		{Kind: FindingCustodianDeparted, KID: "bobs", Staff: bob.ID},
		{Kind: FindingKeyTooOld, KID: "old"},
		{Kind: FindingNoLivingCustodian, KID: "orphan"},
		{Kind: FindingTooManyKeys, Staff: alice.ID},
	}
	if len(fs) != len(want) {
		t.Fatalf("findings %+v", fs)
	}
	for i, w := range want {
		if fs[i].Kind != w.Kind || fs[i].KID != w.KID || fs[i].Staff != w.Staff || fs[i].Detail == "" {
			t.Fatalf("finding %d: %+v, want %+v", i, fs[i], w)
		}
	}
	raw, err := json.Marshal(fs[0])
	if err != nil || string(raw) == "" {
		t.Fatal(err)
	}
	var back map[string]any
	_ = json.Unmarshal(raw, &back)
	if back["kind"] != FindingCustodianDeparted || back["kid"] != "bobs" || back["staff"] != bob.ID {
		t.Fatalf("json %s", raw)
	}
}

func TestGroupRuleConfigurable(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.GroupRules = []GroupRule{{Group: "signing-ops", Kind: SigningKey, ID: "k2", Role: Operate}}
	})
	ctx := context.Background()
	p, _ := e.d.AddPerson(ctx, Person{UserName: "op", Groups: []string{"signing-ops", KeyAdminsGroup}}, "admin:root")
	e.keys.add("k1", keys.Active, t0.Add(-time.Hour))
	e.keys.add("k2", keys.VerifyOnly, t0.Add(-2*time.Hour))
	cs, _ := e.d.Custodians(ctx, SigningKey, "k1")
	if len(cs) != 0 {
		t.Fatalf("default rule still applies: %+v", cs)
	}
	if err := e.d.Depart(ctx, p.ID, "admin:root", "left"); err != nil {
		t.Fatal(err)
	}
	if e.keys.state("k1") != keys.Active || e.keys.state("k2") != keys.Revoked || len(e.keys.callsOf("rotate")) != 0 {
		t.Fatalf("calls %+v", e.keys.calls)
	}
	if _, err := New(ctx, e.d.db, Config{GroupRules: []GroupRule{{Group: "x", Kind: "disk", ID: "*", Role: Operate}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad rule accepted: %v", err)
	}
}

func TestRunSweepsAtStart(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SweepInterval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	end := t0.Add(-time.Minute)
	p, _ := e.d.AddPerson(ctx, Person{UserName: "x"}, "admin:root")
	if _, err := e.d.db.ExecContext(ctx, `UPDATE staff_people SET end_at=$2 WHERE id=$1`, p.ID, nanos(end)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { e.d.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, _ := e.d.Person(ctx, p.ID)
		if q.Status == Departed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run never swept")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
