package sealed

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/custodytest"
)

// pgSchema opens PostgreSQL at 127.0.0.1:5432 on a schema of its own,
// dropped after t.
func pgSchema(t *testing.T) func() *sql.DB {
	t.Helper()
	const base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	admin, err := sql.Open("pgx", base)
	if err == nil {
		err = admin.Ping()
	}
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_keyring_%d", mrand.Uint32())
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec("DROP SCHEMA " + schema + " CASCADE"); admin.Close() })
	return func() *sql.DB {
		db, err := sql.Open("pgx", base+"&search_path="+schema)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
}

func testKEK(t *testing.T) KEK {
	var b [32]byte
	rand.Read(b[:])
	k, err := KEKFromBytes(b[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Two replicas on one shared keyring: a key made at one signs at the other;
// keys added at both at once are all kept; the database holds only
// ciphertext; another KEK is refused; a destroyed key is gone for both once
// read again.
func TestSharedKeyringOnPostgres(t *testing.T) {
	open := pgSchema(t)
	ctx := context.Background()
	kek := testKEK(t)
	a, err := OpenPostgres(ctx, open(), kek)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenPostgres(ctx, open(), kek)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := a.Generate(ctx, "token-1", keys.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Signer("token-1")
	if err != nil {
		t.Fatalf("replica b cannot sign with a's new key: %v", err)
	}
	msg := []byte("header.payload")
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(pub.(ed25519.PublicKey), msg, sig) {
		t.Fatalf("b's signature does not verify under a's public key: %v", err)
	}
	if _, err := b.Generate(ctx, "token-1", keys.EdDSA); !errors.Is(err, ErrExists) {
		t.Fatalf("same id generated twice: %v", err)
	}

	// Concurrent adds at both replicas: compare-and-swap keeps all of them.
	var wg sync.WaitGroup
	for r, k := range []*Keyring{a, b} {
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := k.Generate(ctx, fmt.Sprintf("r%d-%d", r, i), keys.ES256); err != nil {
					t.Errorf("generate: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	for _, k := range []*Keyring{a, b} {
		if ids := k.IDs(); len(ids) != 9 {
			t.Fatalf("a replica sees %d keys, want 9: %v", len(ids), ids)
		}
	}

	// Only ciphertext in the database: no private key bytes.
	var img []byte
	if err := open().QueryRow("SELECT image FROM keys_sealed_keyring").Scan(&img); err != nil {
		t.Fatal(err)
	}
	seed := a.keys["token-1"].priv.(ed25519.PrivateKey).Seed()
	if bytes.Contains(img, seed) || bytes.Contains(img, []byte("token-1")) {
		t.Fatal("the shared keyring's image holds key material or ids in clear")
	}

	// fail/wrong-kek: refused, the image untouched.
	if _, err := OpenPostgres(ctx, open(), testKEK(t)); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("another KEK: %v", err)
	}
	// fail/tampered: one flipped byte is refused.
	img2 := append([]byte(nil), img...)
	img2[len(img2)-3] ^= 1
	db := open()
	if _, err := db.Exec("UPDATE keys_sealed_keyring SET image = $1", img2); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(ctx, open(), kek); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered image: %v", err)
	}
	if _, err := db.Exec("UPDATE keys_sealed_keyring SET image = $1", img); err != nil {
		t.Fatal(err)
	}

	if err := b.Destroy(ctx, "token-1"); err != nil {
		t.Fatal(err)
	}
	a.IDs() // reads the shared image again
	if _, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err == nil {
		t.Fatal("a destroyed key still signs at the replica that destroyed it")
	}
	if _, err := a.Signer("token-1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("destroyed key at the other replica: %v", err)
	}
}

// The keyring in PostgreSQL passes the behaviour every custody backend has;
// its reopen is another replica's view of the same row.
func TestConformancePostgres(t *testing.T) {
	kek := testKEK(t)
	custodytest.Run(t, custodytest.Backend{
		Open: func(t *testing.T) (keys.Custody, func() keys.Custody) {
			open := pgSchema(t)
			k, err := OpenPostgres(context.Background(), open(), kek)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { k.Close() })
			return k, func() keys.Custody {
				k2, err := OpenPostgres(context.Background(), open(), kek)
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				t.Cleanup(func() { k2.Close() })
				return k2
			}
		},
		Algs:      []keys.Alg{keys.EdDSA, keys.ES256},
		ErrExists: ErrExists, ErrBadID: ErrBadID, ErrUnsupported: ErrUnsupported,
	})
}
