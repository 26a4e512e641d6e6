package gateway

import (
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/dpop"
)

// Run: go test -run '^$' -bench . -benchtime 2s ./gateway/
// Bare and gateway proxies forward to the same upstream on loopback.

func benchUpstream(b *testing.B) (*httptest.Server, *url.URL) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"name":"Kim","address":"Seoul"}`)
	}))
	b.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	return up, u
}

func runLoad(b *testing.B, front string, tok string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", front+addr, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

func BenchmarkProxyBare(b *testing.B) {
	_, u := benchUpstream(b)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 1024}
	front := httptest.NewServer(rp)
	defer front.Close()
	runLoad(b, front.URL, "")
}

func BenchmarkProxyGateway(b *testing.B) {
	_, u := benchUpstream(b)
	e := newEnv(b, testConfig())
	c := claimsFor("m-1")
	now := time.Now().Unix()
	c.IssuedAt, c.NotBefore, c.ExpiresAt = now, now, now+3600
	tok := e.issue(b, c)
	g, err := New(testConfig(), e.ks, e.led, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(NewProxy(u, g))
	defer front.Close()
	runLoad(b, front.URL, tok)
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkColdPath is one request whose token the gateway has never seen:
// parse, signature, claims, ledger lookup, event. Compare with
// BenchmarkVerifyRawEd25519.
func BenchmarkColdPath(b *testing.B) {
	e := newEnv(b, testConfig())
	c := claimsFor("m-1")
	tok := e.issue(b, c)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	h := e.g.Middleware(next)
	req := httptest.NewRequest("GET", addr, nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		e.g.checker.Cache.Clear()
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(w, req)
	}
	e.pub.mu.Lock()
	last := e.pub.ev[len(e.pub.ev)-1]
	e.pub.mu.Unlock()
	if last.Verdict != "allow" {
		b.Fatalf("cold path refused: %s", last.Reason)
	}
}

// BenchmarkWarmPath is the same request with the token already verified.
func BenchmarkWarmPath(b *testing.B) {
	e := newEnv(b, testConfig())
	tok := e.issue(b, claimsFor("m-1"))
	h := e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	req := httptest.NewRequest("GET", addr, nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(w, req)
	}
}

func BenchmarkVerifyRawEd25519(b *testing.B) {
	e := newEnv(b, testConfig())
	tok := e.mint(b, claimsFor("m-1"))
	i := strings.LastIndexByte(tok, '.')
	msg := []byte(tok[:i])
	sig, _ := b64.DecodeString(tok[i+1:])
	pub := e.priv.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
}

// benchBound runs the middleware on requests carrying a token bound to
// clientKey, each with a fresh proof signed before the timer starts; cold
// clears the verified-token cache first. Compare with BenchmarkWarmPath,
// BenchmarkColdPath and BenchmarkVerifyRawEd25519: the difference should be
// one signature verification (the proof's).
func benchBound(b *testing.B, cold bool) {
	e := newEnv(b, testConfig())
	tok := e.issue(b, boundClaims(b))
	h := e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	req := httptest.NewRequest("GET", "/api/members/m-1/addresses", nil)
	req.Host = "api.shop.example"
	w := &discardWriter{h: http.Header{}}
	proofs := make([]string, b.N)
	for i := range proofs {
		p, err := dpop.Sign(clientKey, dpop.NewClaims("bench-"+strconv.Itoa(i), "GET", memberURL, tok, "", t0))
		if err != nil {
			b.Fatal(err)
		}
		proofs[i] = p
	}
	before := e.upstream.Load()
	allowed := 0
	h = e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { allowed++ }))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cold {
			e.g.checker.Cache.Clear()
		}
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", proofs[i])
		h.ServeHTTP(w, req)
	}
	b.StopTimer()
	if allowed != b.N || e.upstream.Load() != before {
		b.Fatalf("%d of %d bound requests allowed", allowed, b.N)
	}
}

func BenchmarkColdPathDPoP(b *testing.B) { benchBound(b, true) }
func BenchmarkWarmPathDPoP(b *testing.B) { benchBound(b, false) }
