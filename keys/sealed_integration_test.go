package keys_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/sealed"
	"github.com/custos-dev/custos/store"
)

// The manager over the sealed keyring survives a restart, and revoking a
// key removes its private half from the keyring file.
func TestManagerOverSealedKeyring(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kek, err := sealed.KEKFromBytes(make([]byte, sealed.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.OpenSQLite(filepath.Join(dir, "custos.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }
	open := func() (*keys.Manager, *sealed.Keyring) {
		kr, err := sealed.Open(filepath.Join(dir, "keyring"), kek)
		if err != nil {
			t.Fatal(err)
		}
		m, err := keys.NewManager(ctx, db, kr, "sealed", keys.Policy{}, now, nil)
		if err != nil {
			t.Fatal(err)
		}
		return m, kr
	}
	m, _ := open()
	k1, _, err := m.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := m.Rotate(ctx, "alice", "drill")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, k1.KID, "alice", "drill"); err != nil {
		t.Fatal(err)
	}

	m2, kr2 := open()
	got, s, err := m2.Signer(ctx)
	if err != nil || got.KID != k2.KID {
		t.Fatalf("after restart Signer = %s, %v; want %s", got.KID, err, k2.KID)
	}
	msg := []byte("header.payload")
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(got.Public.(ed25519.PublicKey), msg, sig) {
		t.Fatalf("sign after restart: %v", err)
	}
	if ids := kr2.IDs(); slices.Contains(ids, k1.KID) || !slices.Contains(ids, k2.KID) {
		t.Fatalf("keyring ids = %v; revoked %s must be gone, active %s present", ids, k1.KID, k2.KID)
	}
}
