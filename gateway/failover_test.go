package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
)

// Keys from two authority replicas: with the first gone, fetches and the
// push stream come from the second, and a revocation pushed by it is
// applied within a second.
func TestRemoteKeysFailover(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	newAuth := func() (*authority, *httptest.Server) {
		a := &authority{stream: true, subs: map[int]func(keys.Key){},
			keys: map[string]keys.Key{"k1": {KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}}
		return a, httptest.NewServer(a.handler())
	}
	_, s1 := newAuth()
	a2, s2 := newAuth()
	defer s2.Close()
	rk, err := NewRemoteKeysFailover([]string{s1.URL, s2.URL}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1.CloseClientConnections()
	s1.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rk.Run(ctx, nil); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	for {
		a2.mu.Lock()
		n := len(a2.subs)
		a2.mu.Unlock()
		if _, ok := rk.Lookup("k1"); ok && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never followed the second authority")
		}
		time.Sleep(10 * time.Millisecond)
	}
	at := time.Now()
	a2.setState("k1", keys.Revoked)
	for {
		if k, _ := rk.Lookup("k1"); k.State == keys.Revoked {
			break
		}
		if time.Since(at) > time.Second {
			t.Fatal("revocation from the second authority not applied within 1 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, bad := range [][]string{nil, {}, {"http://ok", "ftp://x"}, {"http://ok", ""}} {
		if _, err := NewRemoteKeysFailover(bad, 0, nil); err == nil {
			t.Errorf("authorities %q accepted", bad)
		}
	}
}

// A batch of access events that one authority cannot take goes to the next.
func TestForwarderFailsOver(t *testing.T) {
	var got atomic.Int64
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Add(int64(strings.Count(string(b), "\n")))
	}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "behind", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	dead := httptest.NewServer(nil)
	dead.Close()
	f := &Forwarder{URL: dead.URL, Others: []string{down.URL, ok.URL}, Window: time.Millisecond}
	ch := make(chan []event.Access, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx, ch)
	ch <- []event.Access{{RequestID: "a"}, {RequestID: "b"}}
	deadline := time.Now().Add(2 * time.Second)
	for got.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("events reached the third authority: %d", got.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f.Sent() != 2 || f.Failures() != 2 {
		t.Fatalf("sent %d failures %d", f.Sent(), f.Failures())
	}
}
