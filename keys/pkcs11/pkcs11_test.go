package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/custodytest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

var labels atomic.Int64

// nextLabel gives each benchmark run its own token.
func nextLabel(prefix string) string { return fmt.Sprintf("%s-%d", prefix, labels.Add(1)) }

// newSoftHSM creates a fresh SoftHSM2 token in a temp dir and opens it.
// SoftHSM2 reads SOFTHSM2_CONF once per process, so every token of the test
// binary lives in one directory; each test gets its own token label.
func newSoftHSM(t testing.TB, label string) *Token {
	t.Helper()
	_, err := os.Stat(softhsmModule)
	if err == nil {
		_, err = exec.LookPath("softhsm2-util")
	}
	testenv.Require(t, "SoftHSM2 ("+softhsmModule+", softhsm2-util; apt-get install softhsm2)", err)
	if os.Getenv("SOFTHSM2_CONF") == "" || os.Getenv("CUSTOS_TEST_SOFTHSM_DIR") == "" {
		t.Fatal("SOFTHSM2_CONF not set up by TestMain")
	}
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	tok, err := Open(Config{Module: softhsmModule, TokenLabel: label, PIN: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "custos-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	os.Mkdir(tokens, 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	os.Setenv("SOFTHSM2_CONF", conf)
	os.Setenv("CUSTOS_TEST_SOFTHSM_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestGenerateSignVerifyDestroy(t *testing.T) {
	ctx := context.Background()
	tok := newSoftHSM(t, "custos")

	pub, err := tok.Generate(ctx, "k1", keys.ES256)
	if err != nil {
		t.Fatal(err)
	}
	ecpub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T", pub)
	}
	s, err := tok.Signer("k1")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("header.payload"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(ecpub, d[:], sig) {
		t.Fatal("signature from the token does not verify with its public key")
	}

	// The private key object is sensitive and not extractable: its value
	// cannot be read.
	attrs, err := tok.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]byte{crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0, crypto11.CkaToken: 1} {
		a := attrs[typ]
		if a == nil || len(a.Value) != 1 || a.Value[0] != want {
			t.Fatalf("attribute %v = %v, want %d", typ, a, want)
		}
	}
	if v, err := tok.ctx.GetAttribute(s, crypto11.CkaValue); err == nil {
		t.Fatalf("reading CKA_VALUE of the private key succeeded (%d bytes)", len(v.Value))
	}

	// A fresh session finds the key by id (it is a token object).
	tok2, err := Open(Config{Module: softhsmModule, TokenLabel: "custos", PIN: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	defer tok2.Close()
	s2, err := tok2.Signer("k1")
	if err != nil {
		t.Fatal(err)
	}
	if !ecpub.Equal(s2.Public()) {
		t.Fatal("key found by id has a different public key")
	}

	if err := tok.Destroy(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	tok2.mu.Lock()
	delete(tok2.signers, "k1") // drop the cache so the token is asked
	tok2.mu.Unlock()
	if _, err := tok2.Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Signer after Destroy: %v, want ErrNotFound", err)
	}
	if err := tok.Destroy(ctx, "k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("second Destroy: %v, want ErrNotFound", err)
	}
}

func TestGenerateRefuses(t *testing.T) {
	ctx := context.Background()
	tok := newSoftHSM(t, "custos-refuse")
	if _, err := tok.Generate(ctx, "k1", keys.ES256); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, id string
		alg      keys.Alg
		want     error
	}{
		{"fail/rs512", "k2", keys.Alg("RS512"), ErrUnsupported},
		{"fail/duplicate", "k1", keys.ES256, ErrExists},
		{"fail/empty-id", "", keys.ES256, ErrBadID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tok.Generate(ctx, tc.id, tc.alg); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkSignES256PKCS11(b *testing.B) {
	tok := newSoftHSM(b, nextLabel("custos-bench"))
	if _, err := tok.Generate(context.Background(), "bench", keys.ES256); err != nil {
		b.Fatal(err)
	}
	s, err := tok.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("header.payload"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignES256PKCS11Parallel(b *testing.B) {
	tok := newSoftHSM(b, nextLabel("custos-benchp"))
	if _, err := tok.Generate(context.Background(), "bench", keys.ES256); err != nil {
		b.Fatal(err)
	}
	s, err := tok.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("header.payload"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestConformance(t *testing.T) {
	custodytest.Run(t, custodytest.Backend{
		Open: func(t *testing.T) (keys.Custody, func() keys.Custody) {
			label := nextLabel("custos-conf")
			tok := newSoftHSM(t, label)
			return tok, func() keys.Custody {
				tok2, err := Open(Config{Module: softhsmModule, TokenLabel: label, PIN: "1234"})
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				t.Cleanup(func() { tok2.Close() })
				return tok2
			}
		},
		Algs:      []keys.Alg{keys.EdDSA, keys.ES256, keys.RS256},
		Refused:   []keys.Alg{keys.Alg("RS512"), keys.Alg("ES384")},
		ErrExists: ErrExists, ErrBadID: ErrBadID, ErrUnsupported: ErrUnsupported,
	})
}
