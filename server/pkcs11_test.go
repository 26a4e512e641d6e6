package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/pkcs11"
	"github.com/custos-dev/custos/token"
)

// custos serve with its token keys in an HSM (SoftHSM2), once per
// algorithm: keys are made in the token, tokens carry the algorithm and the
// gateway verifies them (EdDSA ones with crypto/ed25519 as well); a
// rotation and a revocation work on the token's keys, and the revoked key's
// private half is gone from the token.
func TestServeWithPKCS11(t *testing.T) {
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	_, err := os.Stat(module)
	if err == nil {
		_, err = exec.LookPath("softhsm2-util")
	}
	testenv.Require(t, "SoftHSM2 ("+module+"; apt-get install softhsm2)", err)
	// SoftHSM2 reads its configuration when the module is initialized: one
	// token directory for the whole test, one token per algorithm.
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv("CUSTOS_TEST_HSM_PIN", "1234")
	ctx := context.Background()
	for _, alg := range []keys.Alg{keys.EdDSA, keys.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			label := "custos-" + strings.ToLower(string(alg))
			if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
				t.Fatalf("softhsm2-util: %v: %s", err, out)
			}
			e := startWith(t, func(c *config.Config) {
				c.Keys.Backend, c.Keys.Alg = "pkcs11", string(alg)
				c.Keys.PKCS11 = config.PKCS11{Module: module, TokenLabel: label, PINEnv: "CUSTOS_TEST_HSM_PIN"}
			})
			k, _, err := e.S.Keys.Signer(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if k.Alg != alg || k.Backend != "pkcs11" {
				t.Fatalf("key %+v", k)
			}
			secret := e.Client(t)
			m := e.Member(4)
			tok := e.Issue(t, secret, m)
			if st, reason := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
				t.Fatalf("%s token from the HSM refused: %d %s", alg, st, reason)
			}
			if alg == keys.EdDSA {
				edVerifies(t, tok, k)
				jwksHas(t, e.S.Keys, k)
			}

			// Rotation: the new key is made in the token and signs; the old
			// one still verifies its tokens.
			k2, err := e.S.Keys.Rotate(ctx, "test", "scheduled")
			if err != nil {
				t.Fatal(err)
			}
			if k2.Alg != alg || k2.KID == k.KID {
				t.Fatalf("rotated to %+v", k2)
			}
			tok2 := e.Issue(t, secret, m)
			if p, err := token.Parse(tok2); err != nil || p.Header.KID != k2.KID || string(p.Header.Alg) != string(alg) {
				t.Fatalf("token after rotation: %+v %v", p, err)
			}
			for _, tk := range []string{tok, tok2} {
				if st, reason := e.Get(t, tk, "/api/members/"+m+"/profile"); st != 200 {
					t.Fatalf("token refused after rotation: %d %s", st, reason)
				}
			}
			if alg == keys.EdDSA {
				edVerifies(t, tok2, k2)
			}

			// Revocation: the key's tokens are refused at once, it is listed
			// revoked, a new active key of alg replaces it, and its private
			// half is destroyed in the token.
			if err := e.S.Keys.Revoke(ctx, k2.KID, "test", "suspected theft"); err != nil {
				t.Fatal(err)
			}
			if st, _ := e.Get(t, tok2, "/api/members/"+m+"/profile"); st == 200 {
				t.Fatal("a token of the revoked key was served")
			}
			list, err := e.S.Keys.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			states := map[string]keys.State{}
			var active []keys.Key
			for _, l := range list {
				states[l.KID] = l.State
				if l.State == keys.Active {
					active = append(active, l)
				}
			}
			if states[k2.KID] != keys.Revoked || states[k.KID] != keys.VerifyOnly || len(active) != 1 || active[0].Alg != alg || active[0].Backend != "pkcs11" {
				t.Fatalf("keys after revocation: %v, active %+v", states, active)
			}
			tok3 := e.Issue(t, secret, m)
			if st, reason := e.Get(t, tok3, "/api/members/"+m+"/profile"); st != 200 {
				t.Fatalf("token of the replacement key refused: %d %s", st, reason)
			}
			hsm, err := pkcs11.Open(pkcs11.Config{Module: module, TokenLabel: label, PIN: "1234"})
			if err != nil {
				t.Fatal(err)
			}
			defer hsm.Close()
			if _, err := hsm.Signer(k2.KID); !errors.Is(err, keys.ErrNotFound) {
				t.Fatalf("the revoked key in the token: %v, want ErrNotFound", err)
			}
			if _, err := hsm.Signer(active[0].KID); err != nil {
				t.Fatalf("the active key is not in the token: %v", err)
			}
		})
	}
}

// edVerifies checks a compact token's signature with crypto/ed25519 alone.
func edVerifies(t *testing.T, tok string, k keys.Key) {
	t.Helper()
	pub, ok := k.Public.(ed25519.PublicKey)
	if !ok {
		t.Fatalf("EdDSA key's public half is %T", k.Public)
	}
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || !ed25519.Verify(pub, []byte(tok[:i]), sig) {
		t.Fatalf("the token's signature does not verify with crypto/ed25519: %v", err)
	}
}

// jwksHas checks that JWKS publishes k as an OKP Ed25519 key.
func jwksHas(t *testing.T, m *keys.Manager, k keys.Key) {
	t.Helper()
	raw, err := m.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	for _, j := range set.Keys {
		if j["kid"] == k.KID {
			if j["kty"] != "OKP" || j["crv"] != "Ed25519" || j["alg"] != "EdDSA" || j["x"] != base64.RawURLEncoding.EncodeToString(k.Public.(ed25519.PublicKey)) || j["d"] != "" {
				t.Fatalf("JWKS entry %v", j)
			}
			return
		}
	}
	t.Fatalf("JWKS has no %s: %s", k.KID, raw)
}
