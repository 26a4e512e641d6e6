package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
)

// custos serve with its token keys in an HSM (SoftHSM2): keys are made in
// the token, tokens are ES256, and the gateway verifies them.
func TestServeWithPKCS11(t *testing.T) {
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	_, err := os.Stat(module)
	if err == nil {
		_, err = exec.LookPath("softhsm2-util")
	}
	testenv.Require(t, "SoftHSM2 ("+module+"; apt-get install softhsm2)", err)
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "custos", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	t.Setenv("CUSTOS_TEST_HSM_PIN", "1234")
	e := startWith(t, func(c *config.Config) {
		c.Keys.Backend, c.Keys.Alg = "pkcs11", "ES256"
		c.Keys.PKCS11 = config.PKCS11{Module: module, TokenLabel: "custos", PINEnv: "CUSTOS_TEST_HSM_PIN"}
	})
	k, _, err := e.S.Keys.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if k.Alg != keys.ES256 || k.Backend != "pkcs11" {
		t.Fatalf("key %+v", k)
	}
	secret := e.Client(t)
	m := e.Member(4)
	tok := e.Issue(t, secret, m)
	if st, reason := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("ES256 token from the HSM refused: %d %s", st, reason)
	}
}
