package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"filippo.io/edwards25519"
	p11 "github.com/miekg/pkcs11"

	"github.com/custos-dev/custos/keys"
)

// rawSession opens a logged-in session of its own on tok's token, to look at
// and tamper with objects the way another program on the token could.
func rawSession(t *testing.T, tok *Token) p11.SessionHandle {
	t.Helper()
	s, err := tok.ed.ctx.OpenSession(tok.ed.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.ed.ctx.Login(s, p11.CKU_USER, "1234"); err != nil && !isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.ed.ctx.CloseSession(s) })
	return s
}

func findOne(t *testing.T, tok *Token, s p11.SessionHandle, class uint, id string) p11.ObjectHandle {
	t.Helper()
	hs, err := tok.ed.findObjects(s, idTemplate(class, id))
	if err != nil || len(hs) != 1 {
		t.Fatalf("objects of class %d under %q: %v %v", class, id, hs, err)
	}
	return hs[0]
}

// An Ed25519 key made in the token through CKM_EC_EDWARDS_KEY_PAIR_GEN is a
// sensitive, non-extractable token object whose CKM_EDDSA signatures verify
// with crypto/ed25519, and another session on the token finds and uses it.
func TestEd25519InToken(t *testing.T) {
	ctx := context.Background()
	tok := newSoftHSM(t, "custos-ed")
	if err := tok.Supports(keys.EdDSA); err != nil {
		t.Fatalf("SoftHSM2 2.6 lists CKM_EDDSA, yet: %v", err)
	}
	pub, err := tok.Generate(ctx, "ed1", keys.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	edpub, ok := pub.(ed25519.PublicKey)
	if !ok || len(edpub) != ed25519.PublicKeySize {
		t.Fatalf("public key is %T %x", pub, pub)
	}
	s, err := tok.Signer("ed1")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("header.payload")
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(edpub, msg, sig) {
		t.Fatal("signature from the token does not verify with crypto/ed25519")
	}
	if ed25519.Verify(edpub, []byte("header.payloaD"), sig) {
		t.Fatal("signature verifies over another message")
	}
	// Only pure Ed25519: no prehash, no context.
	if _, err := s.Sign(rand.Reader, msg, crypto.SHA512); err == nil {
		t.Fatal("Ed25519ph signing accepted")
	}
	if _, err := s.Sign(rand.Reader, msg, &ed25519.Options{Context: "x"}); err == nil {
		t.Fatal("Ed25519ctx signing accepted")
	}

	// The private half cannot be read out: sensitive, never extractable,
	// CKA_VALUE refused; the public half is id-Ed25519 with a DER point.
	rs := rawSession(t, tok)
	priv := findOne(t, tok, rs, p11.CKO_PRIVATE_KEY, "ed1")
	if err := checkPrivate(tok.ed.ctx, rs, priv); err != nil {
		t.Fatal(err)
	}
	attrs, err := tok.ed.ctx.GetAttributeValue(rs, priv, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(attrs[0].Value, []byte{1}) || !bytes.Equal(attrs[1].Value, []byte{1}) {
		t.Fatalf("CKA_NEVER_EXTRACTABLE %v, CKA_ALWAYS_SENSITIVE %v", attrs[0].Value, attrs[1].Value)
	}
	if _, err := tok.ed.ctx.GetAttributeValue(rs, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)}); !isRV(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
		t.Fatalf("reading CKA_VALUE of the private key: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
	if err := tok.ed.ctx.SetAttributeValue(rs, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)}); err == nil {
		t.Fatal("CKA_EXTRACTABLE could be turned back on")
	}
	pubH := findOne(t, tok, rs, p11.CKO_PUBLIC_KEY, "ed1")
	pa, err := tok.ed.ctx.GetAttributeValue(rs, pubH, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, nil), p11.NewAttribute(p11.CKA_EC_POINT, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pa[0].Value, edwards25519Params) {
		t.Fatalf("CKA_EC_PARAMS %x", pa[0].Value)
	}
	if want := append([]byte{0x04, 0x20}, edpub...); !bytes.Equal(pa[1].Value, want) {
		t.Fatalf("CKA_EC_POINT %x, want %x", pa[1].Value, want)
	}

	// Another opening of the token (as another process would) finds the
	// key by id and its signatures verify with the same public key.
	tok2, err := Open(Config{Module: softhsmModule, TokenLabel: "custos-ed", PIN: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	defer tok2.Close()
	s2, err := tok2.Signer("ed1")
	if err != nil {
		t.Fatal(err)
	}
	if !edpub.Equal(s2.Public()) {
		t.Fatal("key found by id has another public key")
	}
	sig2, err := s2.Sign(nil, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(edpub, msg, sig2) {
		t.Fatalf("signature through the second opening: %v", err)
	}
	// An ES256 id and an Ed25519 id live side by side.
	if _, err := tok2.Generate(ctx, "ec1", keys.ES256); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Generate(ctx, "ec1", keys.EdDSA); !errors.Is(err, ErrExists) {
		t.Fatalf("EdDSA over an ES256 id: %v, want ErrExists", err)
	}
	if _, err := tok.Generate(ctx, "ed1", keys.ES256); !errors.Is(err, ErrExists) {
		t.Fatalf("ES256 over an Ed25519 id: %v, want ErrExists", err)
	}

	// Destroy at one opening: the other's old signer no longer signs.
	if err := tok.Destroy(ctx, "ed1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Sign(nil, msg, crypto.Hash(0)); err == nil {
		t.Fatal("a signer of another opening still signs after Destroy")
	}
	tok2.mu.Lock()
	delete(tok2.signers, "ed1")
	tok2.mu.Unlock()
	if _, err := tok2.Signer("ed1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Signer after Destroy: %v, want ErrNotFound", err)
	}
}

// A token that does not list CKM_EDDSA refuses EdDSA clearly, before it
// touches the token; ES256 still works there.
func TestEdDSARefusedWithoutMechanism(t *testing.T) {
	tok := newSoftHSM(t, "custos-nomech")
	tok.ed.supported = false // as read from a token without the mechanisms
	_, err := tok.Generate(context.Background(), "k1", keys.EdDSA)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "CKM_EDDSA") || !strings.Contains(err.Error(), "ES256") {
		t.Fatalf("Generate EdDSA = %v, want ErrUnsupported naming CKM_EDDSA and ES256", err)
	}
	if err := tok.Supports(keys.EdDSA); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Supports(EdDSA) = %v", err)
	}
	if _, err := tok.Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("a refused Generate left a key: %v", err)
	}
	if _, err := tok.Generate(context.Background(), "k2", keys.ES256); err != nil {
		t.Fatal(err)
	}
}

// Edwards objects the custody did not make are refused, not used: a key on
// Ed448, a pair whose public object was swapped for another key's, and two
// pairs under one id.
func TestEd25519RefusesForeignObjects(t *testing.T) {
	ctx := context.Background()
	tok := newSoftHSM(t, "custos-foreign")
	rs := rawSession(t, tok)
	gen := func(id string, params []byte) (p11.ObjectHandle, p11.ObjectHandle, error) {
		return tok.ed.ctx.GenerateKeyPair(rs, []*p11.Mechanism{p11.NewMechanism(ckmECEdwardsKeyPairGen, nil)},
			[]*p11.Attribute{
				p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
				p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, params),
				p11.NewAttribute(p11.CKA_ID, []byte(id)), p11.NewAttribute(p11.CKA_VERIFY, true),
			},
			[]*p11.Attribute{
				p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
				p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true),
				p11.NewAttribute(p11.CKA_SENSITIVE, true), p11.NewAttribute(p11.CKA_SIGN, true),
				p11.NewAttribute(p11.CKA_ID, []byte(id)),
			})
	}
	t.Run("ed448", func(t *testing.T) {
		if _, _, err := gen("x448", []byte{0x06, 0x03, 0x2b, 0x65, 0x71}); err != nil {
			t.Skipf("the token makes no Ed448 keys: %v", err)
		}
		if _, err := tok.Signer("x448"); err == nil || errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("an Ed448 key under the id: %v, want a refusal", err)
		}
	})
	t.Run("swapped-public", func(t *testing.T) {
		if _, err := tok.Generate(ctx, "sw", keys.EdDSA); err != nil {
			t.Fatal(err)
		}
		other, _, _ := ed25519.GenerateKey(rand.Reader)
		pubH := findOne(t, tok, rs, p11.CKO_PUBLIC_KEY, "sw")
		if err := tok.ed.ctx.DestroyObject(rs, pubH); err != nil {
			t.Fatal(err)
		}
		if _, err := tok.ed.ctx.CreateObject(rs, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, edwards25519Params),
			p11.NewAttribute(p11.CKA_EC_POINT, append([]byte{0x04, 0x20}, other...)),
			p11.NewAttribute(p11.CKA_ID, []byte("sw")), p11.NewAttribute(p11.CKA_VERIFY, true),
		}); err != nil {
			t.Fatal(err)
		}
		tok2, err := Open(Config{Module: softhsmModule, TokenLabel: "custos-foreign", PIN: "1234"})
		if err != nil {
			t.Fatal(err)
		}
		defer tok2.Close()
		if _, err := tok2.Signer("sw"); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Fatalf("a pair with a swapped public key: %v, want a refusal", err)
		}
	})
	t.Run("two-pairs", func(t *testing.T) {
		for range 2 {
			if _, _, err := gen("dup", edwards25519Params); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tok.Signer("dup"); err == nil || errors.Is(err, keys.ErrNotFound) {
			t.Fatalf("two pairs under one id: %v, want a refusal", err)
		}
		if _, err := tok.Generate(ctx, "dup", keys.EdDSA); err == nil {
			t.Fatal("Generate over an ambiguous id succeeded")
		}
	})
}

func TestParseEdwardsPoint(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der := append([]byte{0x04, 0x20}, pub...)
	for _, ok := range [][]byte{der, pub} {
		got, err := parseEdwardsPoint(ok)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("parseEdwardsPoint(%x) = %x, %v", ok, got, err)
		}
	}
	nonCanonical := bytes.Repeat([]byte{0xff}, 32) // y >= p
	nonCanonical[31] = 0x7f
	for name, bad := range map[string][]byte{
		"empty":          nil,
		"short":          pub[:31],
		"long-der":       append(append([]byte{0x04, 0x21}, pub...), 0),
		"bad-tag":        append([]byte{0x03, 0x20}, pub...),
		"bad-len":        append([]byte{0x04, 0x1f}, pub...),
		"long-form-len":  append([]byte{0x04, 0x81, 0x20}, pub...),
		"non-canonical":  nonCanonical,
		"der-non-canon":  append([]byte{0x04, 0x20}, nonCanonical...),
		"ed448-sized":    make([]byte, 57),
		"der-ed448-size": append([]byte{0x04, 0x39}, make([]byte, 57)...),
	} {
		if k, err := parseEdwardsPoint(bad); err == nil {
			t.Errorf("%s: parseEdwardsPoint(%x) = %x, want an error", name, bad, k)
		}
	}
	if !isEd25519Params(edwards25519Params) || !isEd25519Params(edwards25519Name) {
		t.Fatal("id-Ed25519 parameters not recognised")
	}
	for _, bad := range [][]byte{nil, {0x06, 0x03, 0x2b, 0x65, 0x71}, append([]byte{0x13, 0x0a}, "edwards448"...), {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}} {
		if isEd25519Params(bad) {
			t.Errorf("isEd25519Params(%x) = true", bad)
		}
	}
}

// FuzzParseEdwardsPoint: whatever a token returns as CKA_EC_POINT, the
// parser either refuses it or returns a 32-byte canonical edwards25519
// point that is the payload of one of the two accepted forms.
func FuzzParseEdwardsPoint(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(append([]byte{0x04, 0x20}, pub...))
	f.Add([]byte(pub))
	f.Add([]byte{0x04, 0x20})
	f.Add(bytes.Repeat([]byte{0xff}, 34))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parseEdwardsPoint(b)
		if err != nil {
			if k != nil {
				t.Fatal("a key with an error")
			}
			return
		}
		if len(k) != ed25519.PublicKeySize {
			t.Fatalf("%d-byte key", len(k))
		}
		if !bytes.Equal(k, b) && !(len(b) == 34 && b[0] == 0x04 && b[1] == 0x20 && bytes.Equal(k, b[2:])) {
			t.Fatalf("parsed %x from %x", k, b)
		}
		p, err := new(edwards25519.Point).SetBytes(k)
		if err != nil || !bytes.Equal(p.Bytes(), k) {
			t.Fatalf("accepted a non-canonical or off-curve point %x", k)
		}
		if len(b) > 0 {
			b[len(b)-1] ^= 1 // the key does not alias the token's buffer
			if len(b) == 34 && bytes.Equal(k, b[2:]) || len(b) == 32 && bytes.Equal(k, b) {
				t.Fatal("the returned key aliases its input")
			}
		}
	})
}

// FuzzIsEd25519Params: only the two exact id-Ed25519 encodings are taken.
func FuzzIsEd25519Params(f *testing.F) {
	f.Add(edwards25519Params)
	f.Add(edwards25519Name)
	f.Add([]byte{0x06, 0x03, 0x2b, 0x65, 0x71})
	f.Fuzz(func(t *testing.T, b []byte) {
		if isEd25519Params(b) != (bytes.Equal(b, edwards25519Params) || bytes.Equal(b, edwards25519Name)) {
			t.Fatalf("isEd25519Params(%x)", b)
		}
	})
}

func BenchmarkSignEdDSAPKCS11(b *testing.B) {
	tok := newSoftHSM(b, nextLabel("custos-bench-ed"))
	if _, err := tok.Generate(context.Background(), "bench", keys.EdDSA); err != nil {
		b.Fatal(err)
	}
	s, err := tok.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte("header.payload")
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignEdDSAPKCS11Parallel(b *testing.B) {
	tok := newSoftHSM(b, nextLabel("custos-benchp-ed"))
	if _, err := tok.Generate(context.Background(), "bench", keys.EdDSA); err != nil {
		b.Fatal(err)
	}
	s, err := tok.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte("header.payload")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// More signers at once than the session pool holds: every signature
// verifies, and Close waits for the signing in flight.
func TestEd25519ConcurrentSign(t *testing.T) {
	tok := newSoftHSM(t, "custos-ed-conc")
	pub, err := tok.Generate(context.Background(), "k", keys.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tok.Signer("k")
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4 * maxEdSessions, 10
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				msg := []byte{byte(w), byte(i)}
				sig, err := s.Sign(nil, msg, crypto.Hash(0))
				if err == nil && !ed25519.Verify(pub.(ed25519.PublicKey), msg, sig) {
					err = errors.New("a concurrent signature does not verify")
				}
				if err != nil {
					errs <- err
					return
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
	tok.ed.mu.Lock()
	open, idle := tok.ed.open, len(tok.ed.idle)
	tok.ed.mu.Unlock()
	if open > maxEdSessions || open != idle {
		t.Fatalf("%d sessions open, %d idle; want at most %d, all idle", open, idle, maxEdSessions)
	}
}
