package keys

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

var benchMsg = make([]byte, 320)

// Baseline: raw Ed25519 signing with the standard library.
func BenchmarkSignEd25519Stdlib(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(priv, benchMsg)
	}
}

// Manager.Signer then Sign, per token, as the authority does it: the cost of
// the lifecycle checks on top of the raw signature.
func BenchmarkManagerSignEd25519(b *testing.B) {
	r := newRig(b, Policy{})
	ctx := context.Background()
	r.signer(b)
	b.ReportAllocs()
	for b.Loop() {
		_, s, err := r.m.Signer(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Sign(rand.Reader, benchMsg, crypto.Hash(0)); err != nil {
			b.Fatal(err)
		}
	}
}

// Lookup is on the gateway's hot path.
func BenchmarkLookup(b *testing.B) {
	r := newRig(b, Policy{})
	k, _ := r.signer(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.m.Lookup(k.KID); !ok {
			b.Fatal("missing")
		}
	}
}
