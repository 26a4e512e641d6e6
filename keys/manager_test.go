package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/store"
)

// fakeCustody holds keys in a map; failGenerate makes Generate fail.
type fakeCustody struct {
	mu           sync.Mutex
	keys         map[string]crypto.Signer
	failGenerate error
	destroyed    []string
}

func newFakeCustody() *fakeCustody { return &fakeCustody{keys: map[string]crypto.Signer{}} }

func (f *fakeCustody) Generate(ctx context.Context, id string, alg Alg) (crypto.PublicKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failGenerate != nil {
		return nil, f.failGenerate
	}
	var s crypto.Signer
	switch alg {
	case EdDSA:
		_, s, _ = ed25519.GenerateKey(rand.Reader)
	case ES256:
		s, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	f.keys[id] = s
	return s.Public(), nil
}

func (f *fakeCustody) Signer(id string) (crypto.Signer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.keys[id]
	if !ok {
		return nil, ErrNotFound
	}
	return s, nil
}

func (f *fakeCustody) Destroy(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[id]; !ok {
		return ErrNotFound
	}
	delete(f.keys, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}

func (f *fakeCustody) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.keys[id]
	return ok
}

// fakeJournal records appends; fail makes Append fail.
type fakeJournal struct {
	mu      sync.Mutex
	fail    error
	entries []journalEntry
}

type journalEntry struct {
	kind    string
	changes []Change
}

func (j *fakeJournal) Append(ctx context.Context, kind string, v any) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fail != nil {
		return j.fail
	}
	j.entries = append(j.entries, journalEntry{kind, slices.Clone(v.([]Change))})
	return nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type rig struct {
	m   *Manager
	db  *store.DB
	c   *fakeCustody
	j   *fakeJournal
	clk *clock
}

func newRig(t testing.TB, p Policy) *rig {
	t.Helper()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "custos.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rig{db: db, c: newFakeCustody(), j: &fakeJournal{}, clk: &clock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}}
	r.m, err = NewManager(context.Background(), db, r.c, "fake", p, r.clk.now, r.j)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) signer(t testing.TB) (Key, crypto.Signer) {
	t.Helper()
	k, s, err := r.m.Signer(context.Background())
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	return k, s
}

func jwksKIDs(t testing.TB, m *Manager) []string {
	t.Helper()
	b, err := m.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("JWKS does not parse: %v: %s", err, b)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func signOK(t testing.TB, s crypto.Signer) error {
	t.Helper()
	_, err := s.Sign(rand.Reader, []byte("header.payload"), crypto.Hash(0))
	return err
}

func TestRotationSchedule(t *testing.T) {
	r := newRig(t, Policy{})
	k1, s1 := r.signer(t)
	if k1.State != Active || k1.Alg != EdDSA || k1.Backend != "fake" {
		t.Fatalf("first key = %+v", k1)
	}
	if err := signOK(t, s1); err != nil {
		t.Fatal(err)
	}
	r.clk.advance(DefaultRotateEvery - time.Second)
	if k, _ := r.signer(t); k.KID != k1.KID {
		t.Fatal("rotated before RotateEvery")
	}
	r.clk.advance(time.Second)
	k2, s2 := r.signer(t)
	if k2.KID == k1.KID {
		t.Fatal("did not rotate at RotateEvery")
	}
	old, _ := r.m.Lookup(k1.KID)
	if old.State != VerifyOnly || old.DemotedAt == nil || !old.DemotedAt.Equal(r.clk.now()) {
		t.Fatalf("old key = %+v, want verify-only demoted now", old)
	}
	if err := signOK(t, s1); !errors.Is(err, ErrNotSigning) {
		t.Fatalf("demoted key's signer still signs: %v", err)
	}
	if err := signOK(t, s2); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(t, r.m); !slices.Equal(got, []string{k2.KID, k1.KID}) {
		t.Fatalf("JWKS kids = %v, want [%s %s]", got, k2.KID, k1.KID)
	}
	h, err := r.m.History(context.Background(), k1.KID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].To != Active || h[1].From != Active || h[1].To != VerifyOnly || h[1].Actor != ActorSchedule {
		t.Fatalf("history = %+v", h)
	}
}

func TestTickRetiresVerifyOnly(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Policy{})
	k1, _ := r.signer(t)
	if _, err := r.m.Rotate(ctx, "alice", "drill"); err != nil {
		t.Fatal(err)
	}
	window := DefaultMaxTokenTTL + DefaultRetireLeeway
	r.clk.advance(window - time.Second)
	if err := r.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := r.m.Lookup(k1.KID); k.State != VerifyOnly {
		t.Fatalf("retired early: %s", k.State)
	}
	r.clk.advance(time.Second)
	if err := r.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	k, _ := r.m.Lookup(k1.KID)
	if k.State != Retired || k.RetiredAt == nil {
		t.Fatalf("key = %+v, want retired", k)
	}
	if slices.Contains(jwksKIDs(t, r.m), k1.KID) {
		t.Fatal("retired key still in JWKS")
	}
	if r.c.has(k1.KID) {
		t.Fatal("retired key's private half still in custody")
	}
}

func TestHardMaxKeyAge(t *testing.T) {
	ctx := context.Background()
	t.Run("fail/journal-down", func(t *testing.T) {
		r := newRig(t, Policy{})
		k1, s1 := r.signer(t)
		r.j.mu.Lock()
		r.j.fail = errors.New("audit log unreachable")
		r.j.mu.Unlock()

		// Rotation is due but failing: the key keeps signing until MaxKeyAge.
		r.clk.advance(DefaultRotateEvery)
		if k, _ := r.signer(t); k.KID != k1.KID {
			t.Fatal("rotated although the journal is down")
		}
		r.clk.advance(DefaultMaxKeyAge - DefaultRotateEvery - time.Second)
		if err := signOK(t, s1); err != nil {
			t.Fatalf("key younger than MaxKeyAge refused: %v", err)
		}
		r.clk.advance(time.Second)
		if _, _, err := r.m.Signer(ctx); !errors.Is(err, ErrNotSigning) {
			t.Fatalf("Signer at MaxKeyAge: %v, want ErrNotSigning", err)
		}
		if err := signOK(t, s1); !errors.Is(err, ErrNotSigning) {
			t.Fatalf("held signer at MaxKeyAge: %v, want ErrNotSigning", err)
		}
		if err := r.m.Tick(ctx); err == nil {
			t.Fatal("Tick reported no error while the journal is down")
		}
		r.clk.advance(30 * 24 * time.Hour)
		if _, _, err := r.m.Signer(ctx); !errors.Is(err, ErrNotSigning) {
			t.Fatalf("Signer a month later: %v, want ErrNotSigning", err)
		}
		// The verify side is unaffected: tokens already issued still verify.
		if !slices.Contains(jwksKIDs(t, r.m), k1.KID) {
			t.Fatal("key left JWKS although it was never demoted")
		}
	})
	t.Run("ok/custody-down-tick-demotes", func(t *testing.T) {
		r := newRig(t, Policy{})
		k1, _ := r.signer(t)
		r.c.mu.Lock()
		r.c.failGenerate = errors.New("HSM offline")
		r.c.mu.Unlock()
		r.clk.advance(DefaultMaxKeyAge)
		if err := r.m.Tick(ctx); err == nil {
			t.Fatal("Tick hid the rotation failure")
		}
		k, _ := r.m.Lookup(k1.KID)
		if k.State != VerifyOnly {
			t.Fatalf("key past MaxKeyAge is %s, want verify-only", k.State)
		}
		if _, _, err := r.m.Signer(ctx); !errors.Is(err, ErrNotSigning) {
			t.Fatalf("Signer: %v, want ErrNotSigning", err)
		}
		last := r.j.entries[len(r.j.entries)-1]
		if last.kind != JournalExpire {
			t.Fatalf("last journal entry %q, want %q", last.kind, JournalExpire)
		}
	})
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Policy{})
	var mu sync.Mutex
	var seen []Key
	r.m.OnChange(func(k Key) { mu.Lock(); seen = append(seen, k); mu.Unlock() })

	k1, _ := r.signer(t)
	k2, err := r.m.Rotate(ctx, "alice", "drill")
	if err != nil {
		t.Fatal(err)
	}
	_, s2 := r.signer(t)

	t.Run("ok/verify-only", func(t *testing.T) {
		if err := r.m.Revoke(ctx, k1.KID, "bob", "key file leaked"); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(jwksKIDs(t, r.m), k1.KID) {
			t.Fatal("revoked key still in JWKS")
		}
		k, _ := r.m.Lookup(k1.KID)
		if k.State != Revoked || k.RevokeReason != "key file leaked" || k.RevokedAt == nil {
			t.Fatalf("key = %+v", k)
		}
		if r.c.has(k1.KID) {
			t.Fatal("revoked key's private half still in custody")
		}
	})
	t.Run("ok/active-replaced", func(t *testing.T) {
		if err := r.m.Revoke(ctx, k2.KID, "bob", "suspected compromise"); err != nil {
			t.Fatal(err)
		}
		kids := jwksKIDs(t, r.m)
		if slices.Contains(kids, k2.KID) || len(kids) != 1 {
			t.Fatalf("JWKS kids = %v", kids)
		}
		if err := signOK(t, s2); !errors.Is(err, ErrNotSigning) {
			t.Fatalf("signer of revoked key: %v, want ErrNotSigning", err)
		}
		k3, _ := r.signer(t)
		if k3.KID != kids[0] || k3.KID == k2.KID {
			t.Fatal("no new active key after revoking the active one")
		}
	})
	t.Run("ok/idempotent", func(t *testing.T) {
		n := len(r.j.entries)
		if err := r.m.Revoke(ctx, k1.KID, "bob", "again"); err != nil {
			t.Fatal(err)
		}
		if len(r.j.entries) != n {
			t.Fatal("revoking a revoked key journaled a change")
		}
	})
	t.Run("fail/unknown", func(t *testing.T) {
		if err := r.m.Revoke(ctx, "nope", "bob", "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("fail/no-reason", func(t *testing.T) {
		if err := r.m.Revoke(ctx, k1.KID, "bob", ""); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	var revoked []string
	for _, k := range seen {
		if k.State == Revoked {
			revoked = append(revoked, k.KID)
		}
	}
	if !slices.Equal(revoked, []string{k1.KID, k2.KID}) {
		t.Fatalf("OnChange saw revocations %v", revoked)
	}
}

func TestJournalFailureRefusesRotation(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Policy{})
	k1, _ := r.signer(t)
	before, _ := r.m.List(ctx)
	jwksBefore, _ := r.m.JWKS()
	r.j.mu.Lock()
	r.j.fail = errors.New("disk full")
	r.j.mu.Unlock()

	if _, err := r.m.Rotate(ctx, "alice", "drill"); !errors.Is(err, ErrJournal) {
		t.Fatalf("Rotate: %v, want ErrJournal", err)
	}
	if err := r.m.Revoke(ctx, k1.KID, "alice", "drill"); !errors.Is(err, ErrJournal) {
		t.Fatalf("Revoke: %v, want ErrJournal", err)
	}
	after, _ := r.m.List(ctx)
	jwksAfter, _ := r.m.JWKS()
	if len(after) != len(before) || after[0].KID != k1.KID || after[0].State != Active || string(jwksAfter) != string(jwksBefore) {
		t.Fatalf("state changed: before %+v after %+v", before, after)
	}
	h, _ := r.m.History(ctx, k1.KID)
	if len(h) != 1 {
		t.Fatalf("history grew to %d entries", len(h))
	}
	r.c.mu.Lock()
	n := len(r.c.keys)
	r.c.mu.Unlock()
	if n != 1 {
		t.Fatalf("custody holds %d keys; the refused rotation's key was not destroyed", n)
	}
	// The database agrees: a fresh manager sees the same single active key.
	m2, err := NewManager(ctx, r.db, r.c, "fake", Policy{}, r.clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := m2.List(ctx); len(l) != 1 || l[0].State != Active {
		t.Fatalf("reloaded = %+v", l)
	}
}

func TestEveryChangeRecorded(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Policy{})
	k1, _ := r.signer(t)
	r.clk.advance(time.Hour)
	t1 := r.clk.now()
	k2, err := r.m.Rotate(ctx, "alice", "quarterly drill")
	if err != nil {
		t.Fatal(err)
	}
	r.clk.advance(time.Minute)
	t2 := r.clk.now()
	if err := r.m.Revoke(ctx, k1.KID, "bob", "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	want := map[string][]Change{
		k1.KID: {
			{KID: k1.KID, From: "", To: Active, Actor: ActorSchedule, Reason: "scheduled rotation", At: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
			{KID: k1.KID, From: Active, To: VerifyOnly, Actor: "alice", Reason: "quarterly drill", At: t1},
			{KID: k1.KID, From: VerifyOnly, To: Revoked, Actor: "bob", Reason: "laptop stolen", At: t2},
		},
		k2.KID: {
			{KID: k2.KID, From: "", To: Active, Actor: "alice", Reason: "quarterly drill", At: t1},
		},
	}
	var journaled int
	for _, e := range r.j.entries {
		journaled += len(e.changes)
	}
	if journaled != 4 {
		t.Fatalf("journal holds %d changes, want 4", journaled)
	}
	for kid, w := range want {
		h, err := r.m.History(ctx, kid)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != len(w) {
			t.Fatalf("%s history = %+v", kid, h)
		}
		for i := range w {
			h[i].Seq = 0
			if h[i] != w[i] {
				t.Fatalf("%s change %d = %+v, want %+v", kid, i, h[i], w[i])
			}
		}
	}
	if _, err := r.m.History(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("History(unknown) = %v", err)
	}
	if _, err := r.m.Rotate(ctx, "", "x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Rotate without actor: %v", err)
	}
}

func TestReload(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Policy{Alg: ES256})
	k1, _ := r.signer(t)
	if _, err := r.m.Rotate(ctx, "alice", "drill"); err != nil {
		t.Fatal(err)
	}
	k2, _ := r.signer(t)
	m2, err := NewManager(ctx, r.db, r.c, "fake", Policy{Alg: ES256}, r.clk.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, s, err := m2.Signer(ctx)
	if err != nil || got.KID != k2.KID {
		t.Fatalf("reloaded signer = %s, %v; want %s", got.KID, err, k2.KID)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(got.Public.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("reloaded ES256 signer: %v", err)
	}
	if k, ok := m2.Lookup(k1.KID); !ok || k.State != VerifyOnly || !k.Public.(*ecdsa.PublicKey).Equal(k1.Public) {
		t.Fatalf("reloaded old key = %+v", k)
	}

	t.Run("fail/custody-mismatch", func(t *testing.T) {
		r.c.mu.Lock()
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		r.c.keys[k2.KID] = other
		r.c.mu.Unlock()
		if _, err := NewManager(ctx, r.db, r.c, "fake", Policy{Alg: ES256}, r.clk.now, nil); !errors.Is(err, ErrCustodyMismatch) {
			t.Fatalf("err = %v, want ErrCustodyMismatch", err)
		}
	})
}

func TestJWKSFormat(t *testing.T) {
	for _, tc := range []struct {
		name         string
		alg          Alg
		kty, crv     string
		wantY        bool
		publicLength int
	}{
		{"ok/eddsa", EdDSA, "OKP", "Ed25519", false, 32},
		{"ok/es256", ES256, "EC", "P-256", true, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Policy{Alg: tc.alg})
			k, _ := r.signer(t)
			b, _ := r.m.JWKS()
			var raw struct {
				Keys []map[string]string `json:"keys"`
			}
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			if len(raw.Keys) != 1 {
				t.Fatalf("JWKS = %s", b)
			}
			j := raw.Keys[0]
			if j["kid"] != k.KID || j["alg"] != string(tc.alg) || j["use"] != "sig" || j["kty"] != tc.kty || j["crv"] != tc.crv || j["x"] == "" || (j["y"] != "") != tc.wantY {
				t.Fatalf("JWK = %v", j)
			}
			if _, ok := j["d"]; ok {
				t.Fatal("JWKS carries a private component")
			}
		})
	}
	t.Run("ok/empty", func(t *testing.T) {
		r := newRig(t, Policy{})
		b, _ := r.m.JWKS()
		if string(b) != `{"keys":[]}` {
			t.Fatalf("JWKS = %s", b)
		}
	})
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"ok/defaults", Policy{}, true},
		{"ok/es256-short", Policy{RotateEvery: time.Hour, MaxTokenTTL: time.Minute, Alg: ES256}, true},
		{"ok/hard-limits", Policy{MaxTokenTTL: HardMaxTokenTTL, MaxKeyAge: HardMaxKeyAge}, true},
		{"fail/ttl-over-hard-max", Policy{MaxTokenTTL: HardMaxTokenTTL + time.Second}, false},
		{"fail/age-over-hard-max", Policy{MaxKeyAge: HardMaxKeyAge + time.Second}, false},
		{"fail/rotate-after-max-age", Policy{RotateEvery: 48 * time.Hour, MaxKeyAge: 24 * time.Hour}, false},
		{"fail/negative-rotate", Policy{RotateEvery: -time.Hour}, false},
		{"fail/negative-leeway", Policy{RetireLeeway: -time.Second}, false},
		{"ok/rs256", Policy{Alg: RS256}, true},
		{"fail/rs512", Policy{Alg: "RS512"}, false},
		{"fail/hs256", Policy{Alg: "HS256"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.WithDefaults().Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrPolicy) {
				t.Fatalf("error %v does not wrap ErrPolicy", err)
			}
		})
	}
	db, _ := store.OpenSQLite(filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	if _, err := NewManager(context.Background(), db, newFakeCustody(), "fake", Policy{MaxTokenTTL: 48 * time.Hour}, nil, nil); !errors.Is(err, ErrPolicy) {
		t.Fatalf("NewManager accepted a bad policy: %v", err)
	}
}
