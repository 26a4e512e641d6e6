package replicatest

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// Two authority processes share one PKCS#11 token (SoftHSM2): the key one of
// them makes inside the token signs at the other, a rotation at one is
// signed with at the other, and either keeps issuing when the other is
// killed. Two gateways, one following each authority first (the other as
// failover), serve every token.
// Ed25519 (CKM_EDDSA) here; ES256 in TestSharedPKCS11TokenES256.
func TestSharedPKCS11Token(t *testing.T) { sharedPKCS11Token(t, keys.EdDSA) }

// TestSharedPKCS11TokenES256 is TestSharedPKCS11Token with ES256 keys, the
// way for tokens without CKM_EDDSA.
func TestSharedPKCS11TokenES256(t *testing.T) { sharedPKCS11Token(t, keys.ES256) }

func sharedPKCS11Token(t *testing.T, alg keys.Alg) {
	_, err := os.Stat(softhsmModule)
	if err == nil {
		_, err = exec.LookPath("softhsm2-util")
	}
	testenv.Require(t, "SoftHSM2 ("+softhsmModule+"; apt-get install softhsm2)", err)
	hsm := t.TempDir()
	conf := filepath.Join(hsm, "softhsm2.conf")
	os.Mkdir(filepath.Join(hsm, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(hsm, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	init := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "custos", "--pin", "1234", "--so-pin", "5678")
	init.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}

	d := newDeployment(t, direct)
	d.keys = fmt.Sprintf("  backend: pkcs11\n  alg: %s\n  pkcs11:\n    module: %s\n    token_label: custos\n    pin_env: CUSTOS_HA_HSM_PIN\n", alg, softhsmModule)
	d.env = []string{"SOFTHSM2_CONF=" + conf, "CUSTOS_HA_HSM_PIN=1234"}
	a1, a2, admin, cl := d.twoAuthorities()
	g1 := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	g2 := d.gateway("g2", filepath.Join(d.dir, "a1", "admin-token"), a2, a1)
	g1.waitReady(30 * time.Second)
	g2.waitReady(30 * time.Second)
	member := fmt.Sprint(d.pop.MemberID(3))
	issue := func(a *proc) (tok, kid string) {
		t.Helper()
		var out struct {
			AccessToken string `json:"access_token"`
			KID         string `json:"kid"`
		}
		if _, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err != nil {
			t.Fatalf("issue at %s: %v", a.name, err)
		}
		checkSigned(t, a, out.AccessToken, alg)
		return out.AccessToken, out.KID
	}
	servedWithin := func(tok string) {
		t.Helper()
		for _, g := range []*proc{g1, g2} {
			deadline := time.Now().Add(5 * time.Second)
			for {
				st, reason, err := access(g, tok, member)
				if err == nil && st == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("token refused at %s: %d %s %v", g.name, st, reason, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	t1, k1 := issue(a1)
	t2, k2 := issue(a2)
	if k1 != k2 {
		t.Fatalf("the replicas sign with %s and %s: not one key", k1, k2)
	}
	checkSigned(t, a2, t1, alg) // each replica publishes the key the other signed with
	checkSigned(t, a1, t2, alg)
	servedWithin(t1)
	servedWithin(t2)
	var rot struct {
		KID string `json:"kid"`
	}
	if _, err := call("POST", a1.url()+"/v1/keys/rotate", admin, map[string]string{}, &rot); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tok, kid := issue(a2)
		if kid != k1 {
			servedWithin(tok)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a2 still signs with the old key 3 s after a1 rotated")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a1.kill()
	t3, _ := issue(a2)
	servedWithin(t3)
}

// checkSigned checks that tok carries alg and, for EdDSA, that its signature
// verifies with crypto/ed25519 under the key a's JWKS publishes for its kid.
func checkSigned(t *testing.T, a *proc, tok string, alg keys.Alg) {
	t.Helper()
	p, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Header.Alg) != string(alg) {
		t.Fatalf("token from %s has alg %s, want %s", a.name, p.Header.Alg, alg)
	}
	if alg != keys.EdDSA {
		return
	}
	var set struct {
		Keys []struct{ KID, Kty, Crv, X string } `json:"keys"`
	}
	if _, err := call("GET", a.url()+"/.well-known/jwks.json", "", nil, &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if k.KID != p.Header.KID {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if k.Kty != "OKP" || k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			t.Fatalf("JWKS of %s has %+v for %s", a.name, k, k.KID)
		}
		i := strings.LastIndexByte(tok, '.')
		sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
		if err != nil || !ed25519.Verify(ed25519.PublicKey(x), []byte(tok[:i]), sig) {
			t.Fatalf("a token from %s does not verify with crypto/ed25519: %v", a.name, err)
		}
		return
	}
	t.Fatalf("JWKS of %s has no key %s", a.name, p.Header.KID)
}
