package dpop

import (
	"crypto/ed25519"
	"strings"
	"testing"
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
	for b.Loop() {
		if !ed25519.Verify(pub, []byte(raw[:i]), sig) {
			b.Fatal("bad")
		}
	}
}
