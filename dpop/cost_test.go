package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// A proof whose strings carry JSON escapes reads the same as one without:
// the no-copy reader must decode them, not compare their raw text.
func TestVerifyEscapedStrings(t *testing.T) {
	jwk := jwkJSON(t, edKey.Public())
	header := `{"typ":"dpop\u002bjwt","alg":"Ed\u0044SA","jwk":` + jwk + `}`
	payload := `{"jti":"j\u002d1","htm":"G\u0045T","htu":"https:\/\/api.shop.example\/api\/members\/m-1\/profile","iat":1800000000,"ath":"` + ATH("the-token") + `"}`
	p, err := Verify(forge(t, edKey, header, payload), expect())
	if err != nil {
		t.Fatal(err)
	}
	if p.JTI != "j-1" || p.HTM != "GET" || p.HTU != reqURL || p.Nonce != "" {
		t.Fatalf("proof %+v", p)
	}
}

// More members than foldSet keeps inline: a pair that differs only in case
// is still found past the sixteenth name.
func TestFoldSetPastInline(t *testing.T) {
	var f foldSet
	for i := range 20 {
		if err := f.add([]byte("m" + strings.Repeat("x", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.add([]byte("M" + strings.Repeat("x", 18))); err == nil {
		t.Fatal("a name differing only in case from the 19th was let through")
	}
	if err := f.add([]byte("M")); err == nil {
		t.Fatal("a name differing only in case from the 1st was let through")
	}
}

// The replay key is shared between replicas (dpop/redis): it must stay
// base64url(SHA-256(jkt NUL jti)), whatever the way it is computed.
func TestReplayKeyFormula(t *testing.T) {
	for _, p := range []*Proof{{JKT: "abc", JTI: "j-1"}, {JKT: strings.Repeat("k", 43), JTI: strings.Repeat("j", MaxJTI)}, {JKT: strings.Repeat("k", 400), JTI: "x"}} {
		h := sha256.Sum256([]byte(p.JKT + "\x00" + p.JTI))
		if got, want := ReplayKey(p), b64.EncodeToString(h[:]); got != want {
			t.Fatalf("ReplayKey = %s, want %s", got, want)
		}
	}
}

// A good proof costs one signature verification, counted, and two
// allocations (the Proof and its strings) once its key is known.
func TestVerifyCost(t *testing.T) {
	raw := sign(t, edKey, goodClaims())
	var n atomic.Uint64
	e := expect()
	e.Signatures = &n
	if _, err := Verify(raw, e); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Fatalf("%d signature verifications for one proof", n.Load())
	}
	if allocs := testing.AllocsPerRun(50, func() {
		if _, err := Verify(raw, e); err != nil {
			t.Fatal(err)
		}
	}); allocs > 2 {
		t.Fatalf("%v allocations per proof, want at most 2", allocs)
	}
	// A proof refused before its signature is checked costs none.
	n.Store(0)
	bad := forge(t, edKey, `{"typ":"dpop+jwt","alg":"HS256","jwk":`+jwkJSON(t, edKey.Public())+`}`, payloadJSON(goodClaims()))
	if _, err := Verify(bad, e); err == nil || n.Load() != 0 {
		t.Fatalf("HS256 proof: %v, %d verifications", err, n.Load())
	}
}

// Thumbprint writes the RFC 7638 input by hand: it must give go-jose's
// thumbprint for every key, and P-256 coordinates with leading zero bytes
// must keep their 32 bytes.
func TestThumbprintMatchesGoJose(t *testing.T) {
	var pubs []crypto.PublicKey
	for range 20 {
		ed, _, _ := ed25519.GenerateKey(rand.Reader)
		pubs = append(pubs, ed)
	}
	for len(pubs) < 400 {
		k := mustEC()
		pubs = append(pubs, k.Public())
	}
	shortCoord := 0
	for _, pub := range pubs {
		if k, ok := pub.(*ecdsa.PublicKey); ok {
			pt, _ := k.Bytes()
			if pt[1] == 0 || pt[33] == 0 {
				shortCoord++
			}
		}
		want, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Thumbprint(pub)
		if err != nil || got != b64.EncodeToString(want) {
			t.Fatalf("%T: Thumbprint %q (%v), go-jose %q", pub, got, err, b64.EncodeToString(want))
		}
	}
	if shortCoord == 0 {
		t.Log("no P-256 key with a leading zero coordinate byte drawn")
	}
	if _, err := Thumbprint(ed25519.PublicKey(make([]byte, 31))); err == nil {
		t.Fatal("a 31-byte Ed25519 key has a thumbprint")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := Thumbprint(&p384.PublicKey); err == nil {
		t.Fatal("a P-384 key has a thumbprint")
	}
}

// Proofs verified at the same time each come out with their own claims:
// the pooled buffer is never shared by two calls or kept by a Proof.
func TestVerifyConcurrent(t *testing.T) {
	const workers, each = 8, 50
	raws := make([][]string, workers)
	for w := range raws {
		for i := range each {
			c := goodClaims()
			c.JTI = strings.Repeat("j", 1+w) + "-" + strings.Repeat("i", 1+i)
			raws[w] = append(raws[w], sign(t, edKey, c))
		}
	}
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var kept []*Proof
			for i, raw := range raws[w] {
				p, err := Verify(raw, expect())
				if err != nil {
					errs <- err
					return
				}
				kept = append(kept, p)
				for j, q := range kept[:i+1] {
					if want := strings.Repeat("j", 1+w) + "-" + strings.Repeat("i", 1+j); q.JTI != want || q.HTU != reqURL || q.HTM != "GET" {
						errs <- fmt.Errorf("proof %d of worker %d reads jti %q htu %q htm %q", j, w, q.JTI, q.HTU, q.HTM)
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
