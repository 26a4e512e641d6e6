package dpop

import (
	"crypto"
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify is one proof's full check; BenchmarkEd25519Verify the
// signature verification inside it, for the ratio.
func BenchmarkVerify(b *testing.B) {
	raw := Must(Sign(edKey, goodClaims()))
	e := expect()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(raw, e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEd25519Verify(b *testing.B) {
	raw := Must(Sign(edKey, goodClaims()))
	i := strings.LastIndexByte(raw, '.')
	sig, _ := b64.DecodeString(raw[i+1:])
	pub := edKey.Public().(ed25519.PublicKey)
	msg := []byte(raw[:i])
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("bad")
		}
	}
}

// BenchmarkVerifyOverVerify runs Verify and ed25519.Verify of the same
// proof in alternating chunks of 20 (one b.N iteration: a chunk of each) and
// reports the median over iterations of their ratio (verifies/op: 1 would be
// a proof that costs its signature and nothing else), so that both see the
// same machine and a chunk that lost its core to another process does not
// move the figure.
func BenchmarkVerifyOverVerify(b *testing.B) {
	raw := Must(Sign(edKey, goodClaims()))
	e := expect()
	i := strings.LastIndexByte(raw, '.')
	sig, _ := b64.DecodeString(raw[i+1:])
	pub := edKey.Public().(ed25519.PublicKey)
	msg := []byte(raw[:i])
	const chunk = 20
	var ratios []float64
	for b.Loop() {
		t := time.Now()
		for range chunk {
			if _, err := Verify(raw, e); err != nil {
				b.Fatal(err)
			}
		}
		proof := time.Since(t)
		t = time.Now()
		for range chunk {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("bad")
			}
		}
		ratios = append(ratios, float64(proof)/float64(time.Since(t)))
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "verifies/op")
}

// BenchmarkThumbprint is cnf.jkt of a key, hashed from members written
// directly; BenchmarkThumbprintGoJose the same through go-jose.
func BenchmarkThumbprint(b *testing.B) {
	pub := edKey.Public()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Thumbprint(pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkThumbprintGoJose(b *testing.B) {
	jwk := jose.JSONWebKey{Key: edKey.Public()}
	b.ReportAllocs()
	for b.Loop() {
		t, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		_ = b64.EncodeToString(t)
	}
}
