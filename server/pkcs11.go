package server

import (
	"fmt"
	"os"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/pkcs11"
)

func openPKCS11(cfg config.Config) (*pkcs11.Token, error) {
	p := cfg.Keys.PKCS11
	pin := ""
	if p.PINEnv != "" {
		pin = os.Getenv(p.PINEnv)
	}
	c, err := pkcs11.Open(pkcs11.Config{Module: p.Module, TokenLabel: p.TokenLabel, PIN: pin})
	if err != nil {
		return nil, fmt.Errorf("failed to open the PKCS#11 token: %w", err)
	}
	// Refuse at start, not at the first rotation, when the token cannot hold
	// keys of keys.alg (EdDSA needs CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA).
	if err := c.Supports(keys.Alg(cfg.Keys.Alg)); err != nil {
		c.Close()
		return nil, fmt.Errorf("keys.alg %s: %w", cfg.Keys.Alg, err)
	}
	return c, nil
}
