package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// A token signed by a key made moments ago at another replica (the gateway's
// key set, fetched from a replica that has not loaded it yet, lacks it) is
// served: the gateway asks the authorities for the unknown kid before it
// refuses. Tokens under kids no authority knows are refused as unknown_key,
// and however many of them come, they make no more fetches than the rate
// limit allows; with every authority down the refusal stands (fail closed).
func TestUnknownKidAskedOfTheAuthorities(t *testing.T) {
	_, old, _ := ed25519.GenerateKey(rand.Reader)
	_, fresh, _ := ed25519.GenerateKey(rand.Reader)
	k1 := keys.Key{KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: old.Public()}
	k2 := keys.Key{KID: "k2", Alg: keys.EdDSA, State: keys.Active, Public: fresh.Public()}
	var fetches atomic.Int64
	serve := func(a *authority) *httptest.Server {
		h := a.handler()
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == JWKSPath {
				fetches.Add(1)
			}
			h.ServeHTTP(w, r)
		}))
	}
	// a1 lags: it has not loaded k2, which a2 just made.
	a1 := &authority{subs: map[int]func(keys.Key){}, keys: map[string]keys.Key{"k1": k1}}
	a2 := &authority{subs: map[int]func(keys.Key){}, keys: map[string]keys.Key{"k1": k1, "k2": k2}}
	s1, s2 := serve(a1), serve(a2)
	defer s1.Close()
	defer s2.Close()
	rk, err := NewRemoteKeysFailover([]string{s1.URL, s2.URL}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	rk.MissInterval = time.Hour // DefaultMissBurst fetches for the whole test, then none
	if err := rk.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := rk.Lookup("k2"); ok {
		t.Fatal("the lagging authority listed k2")
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{}`) }))
	defer up.Close()
	led := &fakeLedger{m: map[ledger.Hash]ledger.Status{}}
	g, err := New(testConfig(), rk, led, &capture{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	upURL, _ := url.Parse(up.URL)
	gw := httptest.NewServer(NewProxy(upURL, g))
	defer gw.Close()
	sign := func(priv ed25519.PrivateKey, kid string) string {
		c := claimsFor("m-1")
		now := time.Now().Unix()
		c.IssuedAt, c.NotBefore, c.ExpiresAt = now, now, now+600
		c.JTI = fmt.Sprint("j-", kid, "-", now)
		raw, err := token.Sign(priv, keys.EdDSA, kid, c)
		if err != nil {
			t.Fatal(err)
		}
		led.set(raw, ledger.Live)
		return raw
	}
	get := func(raw string) (int, string) {
		req, _ := http.NewRequest("GET", gw.URL+addr, nil)
		req.Header.Set("Authorization", "Bearer "+raw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body["error_description"]
	}

	before := fetches.Load()
	// Many requests at once with the fresh key: one fetch serves them all.
	good := sign(fresh, "k2")
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i], _ = get(good) }()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d with a token of the fresh key: %d", i, c)
		}
	}
	if n := fetches.Load() - before; n != 2 || rk.MissFetches() != 1 {
		t.Fatalf("%d JWKS fetches (%d set off by the unknown kid), want 2 (a1, then a2) in one", n, rk.MissFetches())
	}
	// Forged kids: refused, and no more fetches within the interval.
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	before = fetches.Load()
	for i := 0; i < 50; i++ {
		if code, why := get(sign(attacker, fmt.Sprint("forged-", i))); code != 401 || why != string(event.ReasonUnknownKey) {
			t.Fatalf("a token under a kid no authority has: %d %q", code, why)
		}
	}
	if n := rk.MissFetches(); n != DefaultMissBurst || fetches.Load()-before != 2*(DefaultMissBurst-1) {
		t.Fatalf("forged kids set off %d fetches (%d JWKS requests), want the rest of the burst, %d", n-1, fetches.Load()-before, DefaultMissBurst-1)
	}

	// Fail closed: a key the gateway cannot learn, every authority gone.
	_, later, _ := ed25519.GenerateKey(rand.Reader)
	a2.mu.Lock()
	a2.keys["k3"] = keys.Key{KID: "k3", Alg: keys.EdDSA, State: keys.Active, Public: later.Public()}
	a2.mu.Unlock()
	rk.missLimit.SetLimit(rate.Inf)
	s1.Close()
	s2.Close()
	time.Sleep(5 * time.Millisecond)
	asked := rk.MissFetches()
	if code, why := get(sign(later, "k3")); code != 401 || why != string(event.ReasonUnknownKey) {
		t.Fatalf("with the authorities down, a token of a key the gateway never saw: %d %q", code, why)
	}
	if rk.MissFetches() != asked+1 {
		t.Fatal("the authorities were not asked")
	}
	// The fresh key stays known; the old one too.
	if code, _ := get(good); code != 200 {
		t.Fatalf("the fresh key forgotten: %d", code)
	}
	if code, _ := get(sign(old, "k1")); code != 200 {
		t.Fatalf("the old key forgotten: %d", code)
	}
}

// A kid revoked at an authority and listed by it is refused as revoked_key
// after the fetch an unknown kid sets off, not served.
func TestUnknownKidRevokedWhenFetched(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	a := &authority{subs: map[int]func(keys.Key){}, keys: map[string]keys.Key{}}
	s := httptest.NewServer(a.handler())
	defer s.Close()
	rk, err := NewRemoteKeys(s.URL, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rk.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.keys["k9"] = keys.Key{KID: "k9", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}
	a.keys["k8"] = keys.Key{KID: "k8", Alg: keys.EdDSA, State: keys.Revoked, Public: priv.Public()}
	a.mu.Unlock()
	k, ok := rk.FetchKID(context.Background(), "k9")
	if !ok || k.State != keys.Active {
		t.Fatalf("k9: %v %v", k, ok)
	}
	if k, ok := rk.Lookup("k8"); !ok || k.State != keys.Revoked {
		t.Fatalf("k8, revoked at the authority, after the fetch: %v %v", k, ok)
	}
	if _, ok := rk.FetchKID(context.Background(), ""); ok {
		t.Fatal("an empty kid found")
	}
}

// Past the burst a token of a key just made waits for the next fetch (within
// the 2 s bound) rather than being refused: two rotations in quick
// succession, each token presented at once, are both served.
func TestUnknownKidWaitsForItsTurn(t *testing.T) {
	var ks []keys.Key
	for i := range 3 {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		ks = append(ks, keys.Key{KID: fmt.Sprint("k", i), Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()})
	}
	a := &authority{subs: map[int]func(keys.Key){}, keys: map[string]keys.Key{"k0": ks[0]}}
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		a.handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	rk, err := NewRemoteKeysFailover([]string{srv.URL}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	rk.MissInterval, rk.MissBurst = 300*time.Millisecond, 1
	if err := rk.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, k := range ks[1:] {
		mu.Lock()
		a.keys[k.KID] = k // rotated at the authority
		mu.Unlock()
		start := time.Now()
		if _, ok := rk.FetchKID(context.Background(), k.KID); !ok {
			t.Fatalf("%s, made a moment ago, refused after %s", k.KID, time.Since(start).Round(time.Millisecond))
		}
	}
	if n := rk.MissFetches(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A turn further off than the bound is refused at once.
	rk.MissInterval = time.Hour
	rk.missLimit = nil
	rk.MissBurst = 1
	rk.FetchKID(context.Background(), "k-unknown-1")
	start := time.Now()
	if _, ok := rk.FetchKID(context.Background(), "k-unknown-2"); ok || time.Since(start) > time.Second {
		t.Fatalf("a kid past the rate limit: ok %t after %s", ok, time.Since(start))
	}
}
