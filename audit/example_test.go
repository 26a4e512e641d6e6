package audit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"

	"github.com/custos-dev/custos/audit"
)

// Open a log, append entries (each Append returns once the entry is in the
// tree), close it (which signs a checkpoint over everything appended), and
// verify it from the files alone with the checkpoint key's public half.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := audit.NewNoteSigner("audit.shop.example/custos", priv)
	verifier, _ := audit.NewNoteVerifier("audit.shop.example/custos", pub)

	l, err := audit.Open(ctx, dir, signer, audit.Options{})
	if err != nil {
		panic(err)
	}
	l.Append(ctx, "keys.rotate", map[string]string{"kid": "k2", "reason": "schedule"})
	l.Append(ctx, "keys.revoke", map[string]string{"kid": "k1", "reason": "custodian left"})
	if err := l.Close(ctx); err != nil {
		panic(err)
	}

	res, err := audit.Verify(ctx, dir, verifier, nil)
	fmt.Println(res.Size, res.Kinds["keys.revoke"], err)

	os.WriteFile(dir+"/tile/entries/000.p/2", []byte("rewritten"), 0o644)
	_, err = audit.Verify(ctx, dir, verifier, nil)
	fmt.Println(err != nil)
	// Output:
	// 2 1 <nil>
	// true
}
