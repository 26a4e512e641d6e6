package sim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"sync"

	"github.com/custos-dev/custos/keys"
)

// leakyCustody is the replay's model of the breached design's key handling:
// keys live in process memory where their custodian can copy them. custos's
// real backends (keys/sealed, keys/pkcs11) have no such door; the replay
// needs one to hand the attacker the key he took.
type leakyCustody struct {
	mu   sync.Mutex
	keys map[string]crypto.Signer
}

var _ keys.Custody = (*leakyCustody)(nil)

func newLeakyCustody() *leakyCustody { return &leakyCustody{keys: map[string]crypto.Signer{}} }

func (c *leakyCustody) Generate(ctx context.Context, id string, alg keys.Alg) (crypto.PublicKey, error) {
	var s crypto.Signer
	switch alg {
	case keys.EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s = priv
	case keys.ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		s = k
	default:
		return nil, errors.New("unsupported algorithm")
	}
	c.mu.Lock()
	c.keys[id] = s
	c.mu.Unlock()
	return s.Public(), nil
}

func (c *leakyCustody) Signer(id string) (crypto.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.keys[id]
	if !ok {
		return nil, keys.ErrNotFound
	}
	return s, nil
}

func (c *leakyCustody) Destroy(ctx context.Context, id string) error {
	c.mu.Lock()
	delete(c.keys, id)
	c.mu.Unlock()
	return nil
}

// steal is the custodian copying a key: the copy outlives Destroy.
func (c *leakyCustody) steal(id string) (crypto.Signer, error) { return c.Signer(id) }
