package ledger_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/sqlite"
)

// Record an issued token in the ledger before handing it out, then answer
// the gateway's provenance question for it, for a token nobody issued, and
// for it again after revocation. Only the token's SHA-256 is kept.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "ledger-example")
	defer os.RemoveAll(dir)
	b, err := sqlite.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		panic(err)
	}
	defer b.Close()
	l, err := ledger.New(ctx, b, time.Now)
	if err != nil {
		panic(err)
	}
	defer l.Close()

	issued := "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMDIwIn0.c2ln" // the token handed to the client
	h := ledger.HashToken(issued)
	err = l.Put(ctx, ledger.Entry{Hash: h, JTI: "j-1", KID: "k1", Subject: "1020", Audience: "shop-api",
		Client: "login", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(5 * time.Minute)})
	if err != nil {
		panic(err) // not durable: do not hand the token out
	}
	st, _ := l.Status(ctx, h)
	fmt.Println("issued:", st)
	st, _ = l.Status(ctx, ledger.HashToken("minted.with.a-stolen-key"))
	fmt.Println("forged:", st)
	if err := l.Revoke(ctx, h); err != nil {
		panic(err)
	}
	st, _ = l.Status(ctx, h)
	fmt.Println("after revocation:", st)
	// Output:
	// issued: live
	// forged: unknown
	// after revocation: revoked
}
