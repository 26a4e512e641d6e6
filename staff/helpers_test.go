package staff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/store"
)

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type call struct {
	op, kid string
	at      time.Time
}

// fakeKeys is a key manager that records its calls and when they happened.
type fakeKeys struct {
	mu        sync.Mutex
	now       func() time.Time
	keys      []keys.Key
	calls     []call
	n         int
	failRotat int // fail this many Rotate calls first
}

func (f *fakeKeys) add(kid string, state keys.State, created time.Time) {
	f.keys = append(f.keys, keys.Key{KID: kid, Alg: keys.EdDSA, State: state, CreatedAt: created})
}

func (f *fakeKeys) Rotate(ctx context.Context, actor, reason string) (keys.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRotat > 0 {
		f.failRotat--
		return keys.Key{}, fmt.Errorf("custody unavailable")
	}
	f.n++
	now := f.now()
	for i := range f.keys {
		if f.keys[i].State == keys.Active {
			f.keys[i].State = keys.VerifyOnly
		}
	}
	k := keys.Key{KID: fmt.Sprintf("rotated-%d", f.n), Alg: keys.EdDSA, State: keys.Active, CreatedAt: now}
	f.keys = append(f.keys, k)
	f.calls = append(f.calls, call{"rotate", k.KID, now})
	return k, nil
}

func (f *fakeKeys) Revoke(ctx context.Context, kid, actor, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for i := range f.keys {
		if f.keys[i].KID == kid {
			f.keys[i].State, f.keys[i].RevokedAt, f.keys[i].RevokeReason = keys.Revoked, &now, reason
			f.calls = append(f.calls, call{"revoke", kid, now})
			return nil
		}
	}
	return keys.ErrNotFound
}

func (f *fakeKeys) List(ctx context.Context) ([]keys.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]keys.Key(nil), f.keys...), nil
}

func (f *fakeKeys) state(kid string) keys.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.keys {
		if k.KID == kid {
			return k.State
		}
	}
	return ""
}

func (f *fakeKeys) callsOf(op string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.op == op {
			out = append(out, c)
		}
	}
	return out
}

type alert struct{ rule, severity, entity, summary string }

type fakeAlerts struct {
	mu     sync.Mutex
	alerts []alert
}

func (a *fakeAlerts) Raise(ctx context.Context, rule, severity, entity, summary string) {
	a.mu.Lock()
	a.alerts = append(a.alerts, alert{rule, severity, entity, summary})
	a.mu.Unlock()
}

func (a *fakeAlerts) count(rule string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, x := range a.alerts {
		if x.rule == rule {
			n++
		}
	}
	return n
}

type fakeCreds struct {
	mu   sync.Mutex
	held map[string]int
	got  []string
}

func (c *fakeCreds) RevokeHeldBy(ctx context.Context, staffID, actor, reason string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, staffID)
	n := c.held[staffID]
	delete(c.held, staffID)
	return n, nil
}

type env struct {
	d      *Directory
	clock  *clock
	keys   *fakeKeys
	alerts *fakeAlerts
	creds  *fakeCreds
	h      http.Handler
	token  string
}

var t0 = time.Date(2024, 6, 1, 9, 0, 0, 0, time.UTC)

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{t: t0}
	e := &env{clock: c, keys: &fakeKeys{now: c.Now}, alerts: &fakeAlerts{}, creds: &fakeCreds{held: map[string]int{}}}
	cfg := Config{Keys: e.keys, Alerts: e.alerts, Credentials: []CredentialRevoker{e.creds}, Now: c.Now}
	if mod != nil {
		mod(&cfg)
	}
	e.d, err = New(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.h = e.d.SCIMHandler()
	e.token, err = e.d.AddSCIMToken(context.Background(), "okta", "admin:alice")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// do sends a SCIM request and decodes the JSON answer.
func (e *env) do(t testing.TB, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	} else {
		rd = bytes.NewReader(nil)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/scim+json")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	var out map[string]any
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %q", method, path, rec.Body.String())
		}
	}
	return rec.Code, out
}

func fixture(t testing.TB, name string, repl ...string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(repl...).Replace(string(raw))
}

func mustStatus(t testing.TB, got, want int, body map[string]any) {
	t.Helper()
	if got != want {
		t.Fatalf("status %d, want %d; body %v", got, want, body)
	}
}
