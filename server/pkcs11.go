package server

import (
	"fmt"
	"os"

	"github.com/custos-dev/custos/config"
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
	return c, nil
}
