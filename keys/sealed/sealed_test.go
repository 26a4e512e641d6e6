package sealed

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/custodytest"
)

func init() {
	// Cheap argon2id for tests; the parameters are read back from the header.
	argonParams.time, argonParams.memory, argonParams.threads = 1, 64, 1
}

func rawKEK(t testing.TB, fill byte) KEK {
	t.Helper()
	k, err := KEKFromBytes(bytes.Repeat([]byte{fill}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRing(t testing.TB, kek KEK) (*Keyring, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring")
	k, err := Open(path, kek)
	if err != nil {
		t.Fatalf("Open new: %v", err)
	}
	return k, path
}

func TestGenerateSignReopen(t *testing.T) {
	ctx := context.Background()
	passKEK, _ := KEKFromPassphrase([]byte("correct horse battery staple"))
	for _, tc := range []struct {
		name string
		kek  KEK
		alg  keys.Alg
	}{
		{"ok/raw-eddsa", rawKEK(t, 1), keys.EdDSA},
		{"ok/raw-es256", rawKEK(t, 2), keys.ES256},
		{"ok/passphrase-eddsa", passKEK, keys.EdDSA},
		{"ok/passphrase-es256", passKEK, keys.ES256},
		{"ok/raw-rs256", rawKEK(t, 3), keys.RS256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, path := newRing(t, tc.kek)
			pub, err := k.Generate(ctx, "k1", tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("header.payload")
			sig := sign(t, k, "k1", tc.alg, msg)
			verify(t, pub, tc.alg, msg, sig)

			k2, err := Open(path, tc.kek)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			s2, err := k2.Signer("k1")
			if err != nil {
				t.Fatal(err)
			}
			if !publicEqual(s2.Public(), pub) {
				t.Fatal("public key changed across reopen")
			}
			verify(t, pub, tc.alg, msg, sign(t, k2, "k1", tc.alg, msg))
		})
	}
}

func sign(t testing.TB, k *Keyring, id string, alg keys.Alg, msg []byte) []byte {
	t.Helper()
	s, err := k.Signer(id)
	if err != nil {
		t.Fatal(err)
	}
	if alg == keys.ES256 || alg == keys.RS256 {
		d := sha256.Sum256(msg)
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func verify(t testing.TB, pub crypto.PublicKey, alg keys.Alg, msg, sig []byte) {
	t.Helper()
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(p, msg, sig) {
			t.Fatal("Ed25519 signature does not verify")
		}
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(p, d[:], sig) {
			t.Fatal("ES256 signature does not verify")
		}
	case *rsa.PublicKey:
		d := sha256.Sum256(msg)
		if p.N.BitLen() != 2048 || rsa.VerifyPKCS1v15(p, crypto.SHA256, d[:], sig) != nil {
			t.Fatal("RS256 signature does not verify")
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	x, ok := a.(eq)
	return ok && x.Equal(b)
}

// TestFileHoldsNoPrivateKey proves the keyring file contains neither the
// private keys nor their seeds, raw, hex or base64.
func TestFileHoldsNoPrivateKey(t *testing.T) {
	ctx := context.Background()
	k, path := newRing(t, rawKEK(t, 3))
	if _, err := k.Generate(ctx, "ed", keys.EdDSA); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Generate(ctx, "ec", keys.ES256); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Generate(ctx, "rsa", keys.RS256); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	ed := k.keys["ed"].priv.(ed25519.PrivateKey)
	ec := k.keys["ec"].priv.(*ecdsa.PrivateKey)
	ecb, _ := ec.Bytes()
	rs := k.keys["rsa"].priv.(*rsa.PrivateKey)
	secrets = append(secrets, ed.Seed(), []byte(ed), ecb, rs.D.Bytes(), rs.Primes[0].Bytes(), rs.Primes[1].Bytes(), x509.MarshalPKCS1PrivateKey(rs))
	for _, s := range secrets {
		for _, enc := range [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))} {
			if bytes.Contains(file, enc) {
				t.Fatalf("keyring file contains private key material (%d bytes)", len(enc))
			}
			// Any 8-byte window of the secret would be a partial leak.
			for i := 0; i+8 <= len(s); i++ {
				if bytes.Contains(file, s[i:i+8]) {
					t.Fatalf("keyring file contains 8 bytes of a private key at offset %d", i)
				}
			}
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
}

func TestOpenFailsClosed(t *testing.T) {
	ctx := context.Background()
	kek := rawKEK(t, 4)
	k, path := newRing(t, kek)
	if _, err := k.Generate(ctx, "k1", keys.EdDSA); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := KEKFromPassphrase([]byte("pw"))

	// Every single-byte flip anywhere in the file is detected as corruption.
	t.Run("fail/tamper-every-byte", func(t *testing.T) {
		for i := range good {
			b := bytes.Clone(good)
			b[i] ^= 0x01
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, kek)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip at byte %d: err = %v, want ErrCorrupt", i, err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		file []byte
		kek  KEK
		want error
	}{
		{"fail/truncated-half", good[:len(good)/2], kek, ErrCorrupt},
		{"fail/truncated-last-byte", good[:len(good)-1], kek, ErrCorrupt},
		{"fail/truncated-header", good[:20], kek, ErrCorrupt},
		{"fail/empty", nil, kek, ErrCorrupt},
		{"fail/appended", append(bytes.Clone(good), 0), kek, ErrCorrupt},
		{"fail/wrong-raw-kek", good, rawKEK(t, 5), ErrWrongKEK},
		{"fail/passphrase-for-raw", good, pass, ErrWrongKEK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, tc.kek)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil && !bytes.Contains([]byte(err.Error()), []byte(path)) {
				t.Fatalf("error %q does not name the file", err)
			}
			// Never recreated over an unreadable keyring.
			now, _ := os.ReadFile(path)
			if !bytes.Equal(now, tc.file) {
				t.Fatal("Open rewrote an unreadable keyring")
			}
		})
	}
	t.Run("fail/wrong-passphrase", func(t *testing.T) {
		p1, _ := KEKFromPassphrase([]byte("right"))
		p2, _ := KEKFromPassphrase([]byte("wrong"))
		_, ppath := newRing(t, p1)
		if _, err := Open(ppath, p2); !errors.Is(err, ErrWrongKEK) {
			t.Fatalf("err = %v, want ErrWrongKEK", err)
		}
		if _, err := Open(ppath, p1); err != nil {
			t.Fatalf("right passphrase: %v", err)
		}
	})
	t.Run("ok/untouched", func(t *testing.T) {
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, kek); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDestroy(t *testing.T) {
	ctx := context.Background()
	kek := rawKEK(t, 6)
	k, path := newRing(t, kek)
	if _, err := k.Generate(ctx, "k1", keys.EdDSA); err != nil {
		t.Fatal(err)
	}
	s, _ := k.Signer("k1")
	if err := k.Destroy(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(nil, []byte("m"), crypto.Hash(0)); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("sign after destroy: %v", err)
	}
	if _, err := k.Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Signer after destroy: %v", err)
	}
	k2, err := Open(path, kek)
	if err != nil {
		t.Fatal(err)
	}
	if len(k2.IDs()) != 0 {
		t.Fatalf("destroyed key came back: %v", k2.IDs())
	}
	if err := k.Destroy(ctx, "k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("second destroy: %v", err)
	}
}

func TestGenerateRefuses(t *testing.T) {
	ctx := context.Background()
	k, _ := newRing(t, rawKEK(t, 7))
	if _, err := k.Generate(ctx, "k1", keys.EdDSA); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, id string
		alg      keys.Alg
		want     error
	}{
		{"fail/duplicate", "k1", keys.EdDSA, ErrExists},
		{"fail/empty-id", "", keys.EdDSA, ErrBadID},
		{"fail/space-id", "a b", keys.EdDSA, ErrBadID},
		{"fail/long-id", string(bytes.Repeat([]byte("a"), MaxIDLen+1)), keys.EdDSA, ErrBadID},
		{"fail/rs512", "k2", keys.Alg("RS512"), ErrUnsupported},
		{"fail/hs256", "k2", keys.Alg("HS256"), ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := k.Generate(ctx, tc.id, tc.alg); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteFailureLeavesNoKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring")
	k, err := Open(path, rawKEK(t, 8))
	if err != nil {
		t.Fatal(err)
	}
	// Removing the directory makes the next write fail, even for root.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Generate(ctx, "k1", keys.EdDSA); err == nil {
		t.Fatal("Generate succeeded though the keyring could not be written")
	}
	if _, err := k.Signer("k1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("key exists in memory after failed write: %v", err)
	}
}

func TestKEKSources(t *testing.T) {
	raw := bytes.Repeat([]byte{9}, KEKSize)
	dir := t.TempDir()
	rawFile := filepath.Join(dir, "raw")
	b64File := filepath.Join(dir, "b64")
	shortFile := filepath.Join(dir, "short")
	os.WriteFile(rawFile, raw, 0o600)
	os.WriteFile(b64File, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)
	os.WriteFile(shortFile, raw[:16], 0o600)
	t.Setenv("CUSTOS_TEST_KEK", base64.StdEncoding.EncodeToString(raw))
	t.Setenv("CUSTOS_TEST_KEK_BAD", "!!!")
	for _, tc := range []struct {
		name string
		get  func() (KEK, error)
		ok   bool
	}{
		{"ok/file-raw", func() (KEK, error) { return KEKFromFile(rawFile) }, true},
		{"ok/file-base64", func() (KEK, error) { return KEKFromFile(b64File) }, true},
		{"ok/env", func() (KEK, error) { return KEKFromEnv("CUSTOS_TEST_KEK") }, true},
		{"fail/file-short", func() (KEK, error) { return KEKFromFile(shortFile) }, false},
		{"fail/file-missing", func() (KEK, error) { return KEKFromFile(filepath.Join(dir, "nope")) }, false},
		{"fail/env-unset", func() (KEK, error) { return KEKFromEnv("CUSTOS_TEST_KEK_UNSET") }, false},
		{"fail/env-not-base64", func() (KEK, error) { return KEKFromEnv("CUSTOS_TEST_KEK_BAD") }, false},
		{"fail/empty-passphrase", func() (KEK, error) { return KEKFromPassphrase(nil) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.get()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !bytes.Equal(k.raw, raw) {
				t.Fatal("KEK bytes differ")
			}
			if bytes.Contains([]byte(k.String()), raw[:4]) {
				t.Fatal("String leaks the KEK")
			}
		})
	}
}

// FuzzOpen feeds arbitrary file images to the keyring reader: it must never
// panic, and must accept only images sealed under the KEK.
func FuzzOpen(f *testing.F) {
	kek := rawKEK(f, 10)
	dir := f.TempDir()
	path := filepath.Join(dir, "seed")
	k, err := Open(path, kek)
	if err != nil {
		f.Fatal(err)
	}
	k.Generate(context.Background(), "ed", keys.EdDSA)
	k.Generate(context.Background(), "ec", keys.ES256)
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add([]byte(magic))
	f.Add([]byte{})
	pass := bytes.Clone(good)
	pass[9] = kdfArgon2id
	f.Add(pass)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decode(b, kek)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKEK) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		for _, id := range k.IDs() {
			if _, err := k.Signer(id); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestConformance(t *testing.T) {
	kek := rawKEK(t, 9)
	custodytest.Run(t, custodytest.Backend{
		Open: func(t *testing.T) (keys.Custody, func() keys.Custody) {
			k, path := newRing(t, kek)
			t.Cleanup(func() { k.Close() })
			return k, func() keys.Custody {
				k2, err := Open(path, kek)
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				t.Cleanup(func() { k2.Close() })
				return k2
			}
		},
		Algs:      []keys.Alg{keys.EdDSA, keys.ES256, keys.RS256},
		ErrExists: ErrExists, ErrBadID: ErrBadID, ErrUnsupported: ErrUnsupported,
	})
}
