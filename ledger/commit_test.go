package ledger

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBackend is an in-memory Backend with switches for failure and delay.
type memBackend struct {
	mu      sync.Mutex
	m       map[Hash]Entry
	fail    error // PutBatch and Get fail with it when set
	delay   time.Duration
	batches atomic.Int64
	shared  bool
}

func newMem() *memBackend { return &memBackend{m: map[Hash]Entry{}} }

func (b *memBackend) PutBatch(ctx context.Context, es []Entry) error {
	b.batches.Add(1)
	time.Sleep(b.delay)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	for _, e := range es {
		if _, ok := b.m[e.Hash]; !ok {
			b.m[e.Hash] = e
		}
	}
	return nil
}

func (b *memBackend) Revoke(ctx context.Context, h Hash, exp time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.m[h]
	e.Hash, e.Revoked = h, true
	if exp.After(e.ExpiresAt) {
		e.ExpiresAt = exp
	}
	b.m[h] = e
	return nil
}

func (b *memBackend) Get(ctx context.Context, h Hash) (Entry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return Entry{}, b.fail
	}
	e, ok := b.m[h]
	if !ok {
		return Entry{}, ErrNotFound
	}
	return e, nil
}

func (b *memBackend) LoadLive(ctx context.Context, now time.Time, fn func(Entry) error) error {
	b.mu.Lock()
	var es []Entry
	for _, e := range b.m {
		if now.Before(e.ExpiresAt) {
			es = append(es, e)
		}
	}
	b.mu.Unlock()
	for _, e := range es {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (b *memBackend) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for h, e := range b.m {
		if !now.Before(e.ExpiresAt) {
			delete(b.m, h)
			n++
		}
	}
	return n, nil
}

func (b *memBackend) SharedWithPeers() bool { return b.shared }

func entry(i uint64, exp time.Time) Entry {
	return Entry{Hash: testHash(i), JTI: "j", KID: "k", Subject: "s", Audience: "a", Client: "c", IssuedAt: t0, ExpiresAt: exp}
}

func fixedClock() func() time.Time { return func() time.Time { return t0 } }

func newLedger(t *testing.T, b Backend) *Ledger {
	t.Helper()
	l, err := New(context.Background(), b, fixedClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLedgerPutStatusRevoke(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	l := newLedger(t, b)
	var got []Record
	var mu sync.Mutex
	cancel := l.Subscribe(func(r Record) { mu.Lock(); got = append(got, r); mu.Unlock() })
	defer cancel()

	e := entry(1, t0.Add(time.Minute))
	if err := l.Put(ctx, e); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Status(ctx, e.Hash); err != nil || st != Live {
		t.Fatalf("Status = %v, %v; want live", st, err)
	}
	if g, err := l.Get(ctx, e.Hash); err != nil || g.Subject != "s" {
		t.Fatalf("Get = %+v, %v", g, err)
	}
	if err := l.Revoke(ctx, e.Hash); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Status(ctx, e.Hash); st != Revoked {
		t.Fatalf("Status after revoke = %v", st)
	}
	if _, err := l.Get(ctx, testHash(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v, want ErrNotFound", err)
	}
	if err := l.Revoke(ctx, testHash(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Revoke unknown: %v, want ErrNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []Record{{Hash: e.Hash, Exp: e.ExpiresAt}, {Hash: e.Hash, Exp: e.ExpiresAt, Revoked: true}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("records = %+v, want %+v", got, want)
	}
}

func TestLedgerFailedCommitNotIndexed(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	b.fail = errors.New("disk full")
	l := newLedger(t, b)
	var published atomic.Int64
	l.Subscribe(func(Record) { published.Add(1) })

	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Put(ctx, entry(uint64(i), t0.Add(time.Minute)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("put %d: err = %v, want the backend's error", i, err)
		}
		if st := l.Index().Status(testHash(uint64(i)), t0); st != Unknown {
			t.Fatalf("put %d: failed entry is %v in the index", i, st)
		}
	}
	if published.Load() != 0 {
		t.Fatalf("%d records published for failed commits", published.Load())
	}
}

func TestLedgerGroupCommit(t *testing.T) {
	b := newMem()
	b.delay = 5 * time.Millisecond
	l := newLedger(t, b)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Put(context.Background(), entry(uint64(i), t0.Add(time.Minute))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := b.batches.Load(); got >= n/4 {
		t.Fatalf("%d puts took %d commits; group commit should need far fewer", n, got)
	}
	if l.Index().Len() != n {
		t.Fatalf("index holds %d, want %d", l.Index().Len(), n)
	}
}

func TestLedgerPutContextCancelled(t *testing.T) {
	b := newMem()
	b.delay = 200 * time.Millisecond
	l := newLedger(t, b)
	// Occupy the writer so the next put waits in the queue.
	go l.Put(context.Background(), entry(1, t0.Add(time.Minute)))
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Put(ctx, entry(2, t0.Add(time.Minute))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put = %v, want deadline exceeded", err)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := b.Get(context.Background(), testHash(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a put abandoned in the queue was written: %v", err)
	}
}

func TestLedgerLoadAndSweep(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	b.PutBatch(ctx, []Entry{entry(1, t0.Add(time.Minute)), entry(2, t0.Add(-time.Minute)), entry(3, t0.Add(time.Minute))})
	b.Revoke(ctx, testHash(3), t0.Add(time.Minute))
	now := t0
	l, err := New(ctx, b, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, want := range map[uint64]Status{1: Live, 2: Unknown, 3: Revoked} {
		if st, _ := l.Status(ctx, testHash(i)); st != want {
			t.Fatalf("hash %d: %v, want %v", i, st, want)
		}
	}
	now = t0.Add(2 * time.Minute)
	n, err := l.Sweep(ctx)
	if err != nil || n != 3 || l.Index().Len() != 0 {
		t.Fatalf("Sweep = %d, %v; index %d; want 3, nil, 0", n, err, l.Index().Len())
	}
}

func TestLedgerClosed(t *testing.T) {
	l, err := New(context.Background(), newMem(), fixedClock())
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Put(context.Background(), entry(1, t0.Add(time.Minute))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
}

func TestLedgerSharedBackendMiss(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	b.shared = true
	l := newLedger(t, b)
	// Another replica wrote this one.
	b.PutBatch(ctx, []Entry{entry(7, t0.Add(time.Minute))})
	if st, err := l.Status(ctx, testHash(7)); err != nil || st != Live {
		t.Fatalf("Status = %v, %v; want live from the shared backend", st, err)
	}
	b.fail = errors.New("connection refused")
	if _, err := l.Status(ctx, testHash(8)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Status with backend down = %v, want ErrUnavailable", err)
	}
	if st, err := l.Status(ctx, testHash(7)); err != nil || st != Live {
		t.Fatalf("cached Status = %v, %v", st, err)
	}
	// With peers writing too, only what the index holds is answered locally.
	if st, ok := l.LocalStatus(testHash(7)); !ok || st != Live {
		t.Fatalf("LocalStatus of a held hash = %v, %v", st, ok)
	}
	if _, ok := l.LocalStatus(testHash(9)); ok {
		t.Fatal("a miss on a shared backend was answered locally")
	}
}

// A ledger with a backend of its own answers every hash from its index.
func TestLedgerLocalStatus(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t, newMem())
	l.Put(ctx, entry(1, t0.Add(time.Minute)))
	if st, ok := l.LocalStatus(testHash(1)); !ok || st != Live {
		t.Fatalf("held: %v %v", st, ok)
	}
	if st, ok := l.LocalStatus(testHash(2)); !ok || st != Unknown {
		t.Fatalf("never issued: %v %v", st, ok)
	}
}

func TestLookupHandler(t *testing.T) {
	ctx := context.Background()
	b := newMem()
	l := newLedger(t, b)
	l.Put(ctx, entry(1, t0.Add(time.Minute)))
	l.Put(ctx, entry(2, t0.Add(time.Minute)))
	l.Revoke(ctx, testHash(2))
	h := l.LookupHandler()
	tests := []struct {
		name, method, body string
		code               int
		want               string
	}{
		{"ok/live", "POST", `{"hash":"` + testHash(1).String() + `"}`, 200, `"status":"live","exp":1760000060`},
		{"ok/revoked", "POST", `{"hash":"` + testHash(2).String() + `"}`, 200, `"status":"revoked"`},
		{"ok/unknown", "POST", `{"hash":"` + testHash(3).String() + `"}`, 200, `"status":"unknown","exp":0`},
		{"fail/method", "GET", ``, 405, `invalid_request`},
		{"fail/short-hash", "POST", `{"hash":"abcd"}`, 400, `invalid_request`},
		{"fail/extra-field", "POST", `{"hash":"` + testHash(1).String() + `","x":1}`, 400, `invalid_request`},
		{"fail/trailing", "POST", `{"hash":"` + testHash(1).String() + `"}{}`, 400, `invalid_request`},
		{"fail/huge", "POST", strings.Repeat(" ", 2000) + `{}`, 400, `invalid_request`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(tc.method, LookupPath, strings.NewReader(tc.body)))
			if rr.Code != tc.code || !strings.Contains(rr.Body.String(), tc.want) {
				t.Fatalf("got %d %s, want %d containing %s", rr.Code, rr.Body.String(), tc.code, tc.want)
			}
		})
	}
}

func TestLookupHandlerBackendDown(t *testing.T) {
	b := newMem()
	b.shared = true
	l := newLedger(t, b)
	b.fail = errors.New("down")
	rr := httptest.NewRecorder()
	l.LookupHandler().ServeHTTP(rr, httptest.NewRequest("POST", LookupPath, strings.NewReader(`{"hash":"`+testHash(1).String()+`"}`)))
	if rr.Code != http.StatusServiceUnavailable || !strings.Contains(rr.Body.String(), "ledger_unavailable") {
		t.Fatalf("got %d %s", rr.Code, rr.Body.String())
	}
}

func FuzzParseLookupRequest(f *testing.F) {
	f.Add([]byte(`{"hash":"` + testHash(1).String() + `"}`))
	f.Add([]byte(`{"hash":"` + strings.ToUpper(testHash(1).String()) + `"}`))
	f.Add([]byte(`{"hash":null}`))
	f.Add([]byte(`{"hash":"zz"}`))
	f.Add([]byte(`{"hash":"` + testHash(1).String() + `"} x`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := ParseLookupRequest(body)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			if h != (Hash{}) {
				t.Fatalf("hash set on error")
			}
			return
		}
		// Whatever parsed must round-trip through the canonical form.
		h2, err := ParseLookupRequest([]byte(`{"hash":"` + h.String() + `"}`))
		if err != nil || h2 != h {
			t.Fatalf("round trip: %v %v", h2, err)
		}
	})
}

func TestLedgerExpiryGrace(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t, newMem())
	inLeeway, past := entry(1, t0.Add(-30*time.Second)), entry(2, t0.Add(-ExpiryGrace-time.Second))
	l.Put(ctx, inLeeway)
	l.Put(ctx, past)
	tests := []struct {
		name string
		h    Hash
		want Status
	}{
		{"ok/expired-within-grace", inLeeway.Hash, Live},
		{"fail/expired-past-grace", past.Hash, Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if st, _ := l.Status(ctx, tc.h); st != tc.want {
				t.Fatalf("Status = %v, want %v", st, tc.want)
			}
		})
	}
}
