package sealed

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/custos-dev/custos/keys"
)

// A JWT signing input of typical size (header.payload, base64url).
var benchMsg = make([]byte, 320)

func benchSign(b *testing.B, s crypto.Signer, msg []byte, opts crypto.SignerOpts) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, msg, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func sealedSigner(b *testing.B, alg keys.Alg) crypto.Signer {
	k, _ := newRing(b, rawKEK(b, 1))
	if _, err := k.Generate(context.Background(), "bench", alg); err != nil {
		b.Fatal(err)
	}
	s, err := k.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// Baseline: the standard library signing directly.
func BenchmarkSignEd25519Stdlib(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	benchSign(b, priv, benchMsg, crypto.Hash(0))
}

func BenchmarkSignEd25519Sealed(b *testing.B) {
	benchSign(b, sealedSigner(b, keys.EdDSA), benchMsg, crypto.Hash(0))
}

// Baseline; the SHA-256 of the signing input is part of each op.
func BenchmarkSignES256Stdlib(b *testing.B) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	benchES256(b, priv)
}

func BenchmarkSignES256Sealed(b *testing.B) {
	benchES256(b, sealedSigner(b, keys.ES256))
}

func benchES256(b *testing.B, s crypto.Signer) {
	b.ReportAllocs()
	for b.Loop() {
		d := sha256.Sum256(benchMsg)
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
