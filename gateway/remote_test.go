package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// authority is a stand-in for custos serve's key endpoints.
type authority struct {
	mu     sync.Mutex
	keys   map[string]keys.Key
	subs   map[int]func(keys.Key)
	next   int
	stream bool
}

func (a *authority) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		var live []keys.Key
		for _, k := range a.keys {
			if k.State == keys.Active || k.State == keys.VerifyOnly {
				live = append(live, k)
			}
		}
		a.mu.Unlock()
		b, _ := token.MarshalJWKS(live)
		w.Write(b)
	})
	mux.HandleFunc("GET "+RevokedPath, func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		revoked := []string{}
		for _, k := range a.keys {
			if k.State == keys.Revoked {
				revoked = append(revoked, k.KID)
			}
		}
		a.mu.Unlock()
		json.NewEncoder(w).Encode(revoked)
	})
	stream := KeyStreamHandler(func(f func(keys.Key)) func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		id := a.next
		a.next++
		a.subs[id] = f
		return func() { a.mu.Lock(); delete(a.subs, id); a.mu.Unlock() }
	})
	mux.HandleFunc("GET "+KeyStreamPath, func(w http.ResponseWriter, r *http.Request) {
		if !a.stream {
			http.NotFound(w, r)
			return
		}
		stream.ServeHTTP(w, r)
	})
	return mux
}

func (a *authority) setState(kid string, s keys.State) {
	a.mu.Lock()
	k := a.keys[kid]
	k.State = s
	a.keys[kid] = k
	subs := make([]func(keys.Key), 0, len(a.subs))
	for _, f := range a.subs {
		subs = append(subs, f)
	}
	a.mu.Unlock()
	for _, f := range subs {
		f(k)
	}
}

// TestEndToEndRevocation runs authority, gateway (as its own HTTP proxy with
// RemoteKeys) and a sample upstream over loopback HTTP, then revokes the key
// and measures how long until the gateway refuses.
func TestEndToEndRevocation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stream   bool
		interval time.Duration
	}{
		{"ok/pushed", true, time.Minute}, // only the push can deliver it in time
		{"ok/backstop-refresh", false, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			a := &authority{stream: tc.stream, subs: map[int]func(keys.Key){},
				keys: map[string]keys.Key{"k1": {KID: "k1", Alg: keys.EdDSA, State: keys.Active, Public: priv.Public()}}}
			as := httptest.NewServer(a.handler())
			defer as.Close()

			var upstreamSubj sync.Map
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				upstreamSubj.Store(r.URL.Path, r.Header.Get(DefaultSubjectHeader))
				io.WriteString(w, `{"address":"Seoul"}`)
			}))
			defer up.Close()

			rk, err := NewRemoteKeys(as.URL, tc.interval, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { rk.Run(ctx, func(err error) { t.Log(err) }); close(done) }()
			defer func() { cancel(); <-done }()

			led := &fakeLedger{m: map[ledger.Hash]ledger.Status{}}
			pub := &capture{}
			g, err := New(testConfig(), rk, led, pub, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			upURL, _ := url.Parse(up.URL)
			gw := httptest.NewServer(NewProxy(upURL, g))
			defer gw.Close()

			c := claimsFor("m-1")
			now := time.Now().Unix()
			c.IssuedAt, c.NotBefore, c.ExpiresAt = now, now, now+600
			raw, err := token.Sign(priv, keys.EdDSA, "k1", c)
			if err != nil {
				t.Fatal(err)
			}
			led.set(raw, ledger.Live)

			get := func() (int, string) {
				req, _ := http.NewRequest("GET", gw.URL+addr, nil)
				req.Header.Set("Authorization", "Bearer "+raw)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var body map[string]string
				b, _ := io.ReadAll(resp.Body)
				_ = json.Unmarshal(b, &body)
				return resp.StatusCode, body["error_description"]
			}
			deadline := time.Now().Add(5 * time.Second)
			for rk.LastSync().IsZero() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if code, why := get(); code != 200 {
				t.Fatalf("before revocation: %d %s", code, why)
			}
			if s, _ := upstreamSubj.Load(addr); s != "m-1" {
				t.Fatalf("upstream subject %q", s)
			}
			if tc.stream { // let the stream connect before revoking
				for i := 0; i < 100; i++ {
					a.mu.Lock()
					n := len(a.subs)
					a.mu.Unlock()
					if n > 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			start := time.Now()
			a.setState("k1", keys.Revoked)
			for {
				code, why := get()
				if code == 401 && why == string(event.ReasonRevokedKey) {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("still %d %q 5 s after revocation", code, why)
				}
				time.Sleep(25 * time.Millisecond)
			}
			t.Logf("revocation refused after %s", time.Since(start).Round(time.Millisecond))
			if ev := pub.last(t); ev.Reason != event.ReasonRevokedKey || ev.Status != 401 {
				t.Errorf("event %+v", ev)
			}
		})
	}
}

func TestRemoteKeysRefusesBadJWKS(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case JWKSPath:
			io.WriteString(w, `{"keys":[{"kty":"oct","kid":"k1","k":"AAAA"}]}`)
		case RevokedPath:
			io.WriteString(w, `[]`)
		}
	}))
	defer srv.Close()
	rk, _ := NewRemoteKeys(srv.URL, time.Second, nil)
	if err := rk.Refresh(context.Background()); err == nil {
		t.Fatal("symmetric key accepted")
	}
	if _, ok := rk.Lookup("k1"); ok {
		t.Fatal("key from refused set is known")
	}
	if _, err := NewRemoteKeys("ftp://x", 0, nil); err == nil {
		t.Fatal("ftp authority accepted")
	}
	if _, err := parseRevoked([]byte(`["a",{"kid":"b"}]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := parseRevoked([]byte(`[1]`)); err == nil {
		t.Fatal("numeric kid accepted")
	}
}
