package remote

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/sqlite"
)

type authority struct {
	l   *ledger.Ledger
	srv *httptest.Server
}

func startAuthority(t *testing.T, wrap func(http.Handler) http.Handler) *authority {
	t.Helper()
	b, err := sqlite.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(context.Background(), b, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	var stream http.Handler = l.StreamHandler()
	if wrap != nil {
		stream = wrap(stream)
	}
	mux.Handle(ledger.StreamPath, stream)
	mux.Handle(ledger.LookupPath, l.LookupHandler())
	a := &authority{l: l, srv: httptest.NewServer(mux)}
	t.Cleanup(func() { a.stop(); l.Close(); b.Close() })
	return a
}

func (a *authority) stop() {
	a.srv.CloseClientConnections()
	a.srv.Close()
}

func (a *authority) put(t *testing.T) ledger.Hash {
	t.Helper()
	var tok [16]byte
	rand.Read(tok[:])
	e := ledger.Entry{Hash: ledger.HashToken(fmt.Sprintf("%x", tok)), JTI: "j", KID: "k", Subject: "s",
		Audience: "a", Client: "c", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := a.l.Put(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e.Hash
}

func runClient(t *testing.T, a *authority) *Client {
	t.Helper()
	c := New(a.srv.URL, a.srv.Client(), time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return c
}

// waitIndex polls the client's local index (not Status, which could ask the
// authority) until h has status want or the deadline passes.
func waitIndex(t *testing.T, c *Client, h ledger.Hash, want ledger.Status, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c.Index().Status(h, time.Now()) == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("hash not %v in the local index within %v", want, within)
}

func waitSynced(t *testing.T, c *Client) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !c.fresh(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("client never synced")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSnapshotThenStream(t *testing.T) {
	a := startAuthority(t, nil)
	before := a.put(t)
	c := runClient(t, a)
	waitIndex(t, c, before, ledger.Live, time.Second) // from the snapshot
	waitSynced(t, c)
	after := a.put(t)
	waitIndex(t, c, after, ledger.Live, time.Second) // pushed
	if st, err := c.Status(context.Background(), after); err != nil || st != ledger.Live {
		t.Fatalf("Status = %v, %v", st, err)
	}
}

func TestRevocationPropagates(t *testing.T) {
	a := startAuthority(t, nil)
	c := runClient(t, a)
	h := a.put(t)
	waitIndex(t, c, h, ledger.Live, time.Second)
	if err := a.l.Revoke(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, c, h, ledger.Revoked, time.Second)
	if st, err := c.Status(context.Background(), h); err != nil || st != ledger.Revoked {
		t.Fatalf("Status = %v, %v; want revoked", st, err)
	}
}

func TestMissFallsBackToLookup(t *testing.T) {
	a := startAuthority(t, nil)
	c := New(a.srv.URL, a.srv.Client(), time.Now) // not running: every hash is a miss
	h := a.put(t)
	if st, err := c.Status(context.Background(), h); err != nil || st != ledger.Live {
		t.Fatalf("Status = %v, %v; want live via lookup", st, err)
	}
	if c.Index().Status(h, time.Now()) != ledger.Live {
		t.Fatal("lookup answer not kept in the local index")
	}
	if st, err := c.Status(context.Background(), ledger.HashToken("forged")); err != nil || st != ledger.Unknown {
		t.Fatalf("Status of unissued = %v, %v; want unknown", st, err)
	}
}

func TestAuthorityDown(t *testing.T) {
	a := startAuthority(t, nil)
	c := New(a.srv.URL, a.srv.Client(), time.Now)
	h := a.put(t)
	if st, _ := c.Status(context.Background(), h); st != ledger.Live {
		t.Fatal("setup: lookup failed")
	}
	a.stop()
	tests := []struct {
		name string
		h    ledger.Hash
	}{
		{"fail/miss", ledger.HashToken("never seen")},
		// Held in the index, but no stream has vouched for it recently.
		{"fail/stale-hit", h},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := c.Status(context.Background(), tc.h)
			if !errors.Is(err, ledger.ErrUnavailable) || st != ledger.Unknown {
				t.Fatalf("Status = %v, %v; want unknown, ErrUnavailable", st, err)
			}
		})
	}
}

func TestLookupAnswerRejected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"maybe"}`))
	}))
	defer srv.Close()
	c := New(srv.URL, srv.Client(), time.Now)
	if _, err := c.Status(context.Background(), ledger.HashToken("x")); !errors.Is(err, ledger.ErrUnavailable) {
		t.Fatalf("Status = %v, want ErrUnavailable", err)
	}
}

func TestReconnects(t *testing.T) {
	var calls atomic.Int64
	a := startAuthority(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	c := runClient(t, a)
	h := a.put(t)
	waitIndex(t, c, h, ledger.Live, 2*time.Second)
	if calls.Load() < 2 {
		t.Fatalf("stream opened %d times, want a reconnect", calls.Load())
	}
}

func TestCorruptStreamIsDropped(t *testing.T) {
	h := ledger.HashToken("t")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"hb\":1}\n{\"h\":\"zz\",\"exp\":1}\n{\"h\":\"%s\",\"exp\":9999999999}\n", h)
	}))
	defer srv.Close()
	c := New(srv.URL, srv.Client(), time.Now)
	c.follow(context.Background())
	if c.Index().Len() != 0 {
		t.Fatal("records after a corrupt line were applied")
	}
}

func FuzzParseStreamLine(f *testing.F) {
	h := ledger.HashToken("t").String()
	for _, s := range []string{
		`{"h":"` + h + `","exp":1760000000}`,
		`{"h":"` + h + `","exp":1760000000,"r":true}`,
		`{"hb":1760000000}`,
		`{"hb":1,"h":"` + h + `","exp":1}`,
		`{"h":"` + h + `"}`,
		`{"h":"` + h + `","exp":-1}`,
		`{"h":"` + h + `","exp":1,"x":2}`,
		`{}`, `null`, `{"hb":1} {}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ln, err := ParseStreamLine(b)
		if err != nil {
			if !errors.Is(err, ErrBadLine) {
				t.Fatalf("error %v does not wrap ErrBadLine", err)
			}
			return
		}
		if ln.Heartbeat {
			return
		}
		// A record re-encodes to a line that parses to the same record.
		again, err := ParseStreamLine([]byte(strings.TrimSuffix(string(ledger.AppendRecordLine(nil, ln.Record)), "\n")))
		if err != nil || again != ln {
			t.Fatalf("round trip %+v → %+v, %v", ln, again, err)
		}
	})
}

func FuzzParseLookupResponse(f *testing.F) {
	for _, s := range []string{
		`{"status":"live","exp":1760000000}`, `{"status":"revoked","exp":1760000000}`,
		`{"status":"unknown","exp":0}`, `{"status":"live","exp":0}`, `{"status":"LIVE","exp":1}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, exp, err := ParseLookupResponse(b)
		if err != nil {
			if !errors.Is(err, ErrBadLine) || st != ledger.Unknown {
				t.Fatalf("error %v with status %v", err, st)
			}
			return
		}
		if st != ledger.Unknown && exp.Unix() <= 0 {
			t.Fatalf("%v with exp %v", st, exp)
		}
	})
}

// LocalStatus answers only what the index may answer alone: a revocation at
// any time, a live hash while the stream is fresh; never a miss.
func TestLocalStatus(t *testing.T) {
	a := startAuthority(t, nil)
	idle := New(a.srv.URL, a.srv.Client(), time.Now) // never synced
	h := a.put(t)
	if _, err := idle.Status(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if st, ok := idle.LocalStatus(h); ok {
		t.Fatalf("unsynced client answered %v locally for a held hash", st)
	}
	c := runClient(t, a)
	waitSynced(t, c)
	waitIndex(t, c, h, ledger.Live, time.Second)
	if st, ok := c.LocalStatus(h); !ok || st != ledger.Live {
		t.Fatalf("fresh hit: %v %v", st, ok)
	}
	if _, ok := c.LocalStatus(ledger.HashToken("never issued")); ok {
		t.Fatal("a miss was answered locally")
	}
	if err := a.l.Revoke(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, c, h, ledger.Revoked, time.Second)
	if st, ok := c.LocalStatus(h); !ok || st != ledger.Revoked {
		t.Fatalf("revoked: %v %v", st, ok)
	}
}

// With its authority gone, a gateway keeps serving tokens its index saw
// issued for MaxStale after the stream was last heard, counting each; then
// it refuses them; unseen tokens are refused throughout.
func TestBoundedStaleness(t *testing.T) {
	a := startAuthority(t, nil)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	c := New(a.srv.URL, a.srv.Client(), clock)
	c.MaxStale = 30 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	h := a.put(t)
	waitIndex(t, c, h, ledger.Live, 2*time.Second)
	for deadline := time.Now().Add(5 * time.Second); !c.fresh(clock()); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("client never synced")
		}
	}
	revoked := a.put(t)
	waitIndex(t, c, revoked, ledger.Live, 2*time.Second)
	if err := a.l.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, c, revoked, ledger.Revoked, 2*time.Second)
	a.stop()
	for _, tc := range []struct {
		name  string
		after time.Duration
		h     ledger.Hash
		want  ledger.Status
		err   bool
	}{
		{"ok/known_within_max_stale", 10 * time.Second, h, ledger.Live, false},
		{"ok/known_just_within", 29 * time.Second, h, ledger.Live, false},
		{"fail/unseen", 10 * time.Second, ledger.HashToken("never issued"), ledger.Unknown, true},
		{"fail/revoked_stays_revoked", 10 * time.Second, revoked, ledger.Revoked, false},
		{"fail/known_beyond_max_stale", 31 * time.Second, h, ledger.Unknown, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now.Store(time.Unix(0, c.lastHeard.Load()).Add(tc.after).UnixNano())
			st, err := c.Status(context.Background(), tc.h)
			if st != tc.want || (err != nil) != tc.err || tc.err && !errors.Is(err, ledger.ErrUnavailable) {
				t.Fatalf("Status = %v, %v; want %v (error %v)", st, err, tc.want, tc.err)
			}
		})
	}
	if n := c.StaleServed(); n != 2 {
		t.Errorf("%d answers counted as stale, want 2", n)
	}
	if s := c.Staleness(); s < 30*time.Second {
		t.Errorf("staleness %v", s)
	}
}
