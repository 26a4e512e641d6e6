package jwks

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func parse(b []byte) (*jose.JSONWebKeySet, error) {
	var s jose.JSONWebKeySet
	return &s, json.Unmarshal(b, &s)
}

// A key set is fetched once, served from the cache, fetched again for an
// unknown kid no more than once per MinRefresh, again after MaxAge, kept
// through failures up to Stale and refused after.
func TestRemoteRefreshPolicy(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	var fetches atomic.Int32
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}})
	}))
	defer srv.Close()
	now := time.Unix(1_800_000_000, 0)
	r := &Remote{URL: srv.URL, Client: srv.Client(), Now: func() time.Time { return now }, Parse: parse}
	ctx := context.Background()
	step := func(want int32, refresh bool, wantErr bool) {
		t.Helper()
		set, err := r.KeySet(ctx, refresh)
		if (err != nil) != wantErr {
			t.Fatalf("at %s: err %v, want error %t", now, err, wantErr)
		}
		if err == nil && (len(set.Keys) != 1 || set.Keys[0].KeyID != "k1") {
			t.Fatalf("at %s: key set %+v", now, set)
		}
		if got := fetches.Load(); got != want {
			t.Fatalf("at %s: %d fetches, want %d", now, got, want)
		}
	}
	step(1, false, false)
	step(1, false, false) // cached
	step(1, true, false)  // an unknown kid within MinRefresh of the last fetch
	now = now.Add(MinRefresh)
	step(2, true, false)
	now = now.Add(MaxAge)
	step(3, false, false)
	down.Store(true)
	now = now.Add(MaxAge)
	step(4, false, false) // failed, the old copy serves
	now = now.Add(Stale)
	step(5, false, true) // failed, and the copy is too old
}

func TestRemoteRefusesLargeAndBadSets(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"large":  func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, MaxBytes+1)) },
		"status": func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
		"json":   func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{")) },
	} {
		srv := httptest.NewServer(h)
		r := &Remote{URL: srv.URL, Client: srv.Client(), Parse: parse}
		if set, err := r.KeySet(context.Background(), false); err == nil {
			t.Errorf("%s: key set %+v, want an error", name, set)
		}
		srv.Close()
	}
}

func TestCheckURL(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://idp.example/jwks":          true,
		"http://127.0.0.1:8080/jwks":        true,
		"http://[::1]/jwks":                 true,
		"http://localhost/jwks":             true,
		"http://idp.example/jwks":           false,
		"https://user:pw@idp.example/jwks":  false,
		"https://idp.example/jwks#frag":     false,
		"/jwks":                             false,
		"ftp://idp.example/jwks":            false,
		"http://127.0.0.1.idp.example/jwks": false,
	} {
		if err := CheckURL(u); (err == nil) != ok {
			t.Errorf("CheckURL(%q) = %v, want ok %t", u, err, ok)
		}
	}
}
