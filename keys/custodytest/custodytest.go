// Package custodytest is the behaviour every keys.Custody backend must have:
// the sealed keyring and the PKCS#11 token each run it from their tests.
//
// It checks what custody promises the rest of custos: a generated key signs
// access tokens that verify with the public key Generate returned, in the
// JWS form the gateway checks; a key persists across a reopen; ids are
// unique; unsupported algorithms and bad ids are refused; and a destroyed key
// signs nothing more, not even through a signer taken before.
package custodytest

import (
	"context"
	"crypto"
	"errors"
	"testing"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// Backend describes one custody backend under test.
type Backend struct {
	// Open opens a fresh, empty custody for t; reopen opens the same custody
	// again, as another process would (nil when that cannot be done).
	Open func(t *testing.T) (c keys.Custody, reopen func() keys.Custody)
	// Algs are the algorithms the backend generates; Refused, some it must refuse.
	Algs, Refused []keys.Alg
	// The backend's errors for a duplicate id, a bad id and an unsupported algorithm.
	ErrExists, ErrBadID, ErrUnsupported error
}

var ctx = context.Background()

// Run runs every case against b.
func Run(t *testing.T, b Backend) {
	if len(b.Algs) == 0 {
		t.Fatal("custodytest: the backend names no algorithm")
	}
	for _, alg := range b.Algs {
		t.Run("SignVerify/"+string(alg), func(t *testing.T) { testSignVerify(t, b, alg) })
		t.Run("Reopen/"+string(alg), func(t *testing.T) { testReopen(t, b, alg) })
		t.Run("Destroy/"+string(alg), func(t *testing.T) { testDestroy(t, b, alg) })
	}
	t.Run("Refuses", func(t *testing.T) { testRefuses(t, b) })
}

func claims() token.Claims {
	return token.Claims{Issuer: "https://custos.test", Subject: "1001", Audience: "shop-api",
		IssuedAt: 2000000000, NotBefore: 2000000000, ExpiresAt: 2000000300,
		JTI: "0123456789abcdef0123456789abcdef", ClientID: "login"}
}

// signs checks that s makes access tokens that verify with pub and not
// with another key.
func signs(t *testing.T, s crypto.Signer, alg keys.Alg, pub crypto.PublicKey) {
	t.Helper()
	raw, err := token.Sign(s, alg, "k1", claims())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	p, err := token.Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := token.VerifySignature(p, alg, pub); err != nil {
		t.Fatalf("a token signed in custody does not verify with the generated public key: %v", err)
	}
	p.Signature[len(p.Signature)/2] ^= 1
	if err := token.VerifySignature(p, alg, pub); !errors.Is(err, token.ErrBadSignature) {
		t.Fatalf("a token with a flipped signature bit verifies: %v", err)
	}
}

func generate(t *testing.T, c keys.Custody, id string, alg keys.Alg) crypto.PublicKey {
	t.Helper()
	pub, err := c.Generate(ctx, id, alg)
	if err != nil {
		t.Fatalf("Generate %s %s: %v", id, alg, err)
	}
	return pub
}

func signer(t *testing.T, c keys.Custody, id string) crypto.Signer {
	t.Helper()
	s, err := c.Signer(id)
	if err != nil {
		t.Fatalf("Signer %s: %v", id, err)
	}
	return s
}

type equaler interface{ Equal(crypto.PublicKey) bool }

func testSignVerify(t *testing.T, b Backend, alg keys.Alg) {
	c, _ := b.Open(t)
	pub := generate(t, c, "k1", alg)
	s := signer(t, c, "k1")
	if e, ok := s.Public().(equaler); !ok || !e.Equal(pub) {
		t.Fatal("the signer's public key is not the one Generate returned")
	}
	signs(t, s, alg, pub)
	other := generate(t, c, "k2", alg)
	if e, ok := other.(equaler); !ok || e.Equal(pub) {
		t.Fatal("two generated keys have the same public key")
	}
	raw, _ := token.Sign(s, alg, "k1", claims())
	p, _ := token.Parse(raw)
	if err := token.VerifySignature(p, alg, other); !errors.Is(err, token.ErrBadSignature) {
		t.Fatalf("k1's token verifies with k2's key: %v", err)
	}
}

func testReopen(t *testing.T, b Backend, alg keys.Alg) {
	c, reopen := b.Open(t)
	if reopen == nil {
		t.Skip("the backend cannot be reopened here")
	}
	pub := generate(t, c, "k1", alg)
	c2 := reopen()
	signs(t, signer(t, c2, "k1"), alg, pub)
}

func testDestroy(t *testing.T, b Backend, alg keys.Alg) {
	c, reopen := b.Open(t)
	generate(t, c, "k1", alg)
	keep := generate(t, c, "k2", alg)
	before := signer(t, c, "k1")
	if err := c.Destroy(ctx, "k1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := c.Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Signer after Destroy: %v, want keys.ErrNotFound", err)
	}
	if _, err := token.Sign(before, alg, "k1", claims()); err == nil {
		t.Fatal("a signer taken before Destroy still signs")
	}
	if err := c.Destroy(ctx, "k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("second Destroy: %v, want keys.ErrNotFound", err)
	}
	signs(t, signer(t, c, "k2"), alg, keep) // the other key is untouched
	if reopen != nil {
		if _, err := reopen().Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("a destroyed key came back after reopening: %v", err)
		}
	}
}

func testRefuses(t *testing.T, b Backend) {
	c, _ := b.Open(t)
	generate(t, c, "k1", b.Algs[0])
	cases := []struct {
		name, id string
		alg      keys.Alg
		want     error
	}{
		{"duplicate", "k1", b.Algs[0], b.ErrExists},
		{"empty-id", "", b.Algs[0], b.ErrBadID},
		{"none", "k3", "none", b.ErrUnsupported},
		{"hs256", "k4", "HS256", b.ErrUnsupported},
	}
	for _, alg := range b.Refused {
		cases = append(cases, struct {
			name, id string
			alg      keys.Alg
			want     error
		}{"refused-" + string(alg), "k5", alg, b.ErrUnsupported})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Generate(ctx, tc.id, tc.alg); !errors.Is(err, tc.want) {
				t.Fatalf("Generate(%q, %q) = %v, want %v", tc.id, tc.alg, err, tc.want)
			}
			if tc.id != "k1" {
				if _, err := c.Signer(tc.id); !errors.Is(err, keys.ErrNotFound) {
					t.Fatalf("a refused Generate left a key %q behind: %v", tc.id, err)
				}
			}
		})
	}
}
