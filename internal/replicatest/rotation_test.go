package replicatest

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// A signing key rotated at one authority signs tokens there at once; a
// standalone gateway whose key set comes first from the other authority
// serves them at once too (it asks the authorities for a kid it does not
// know before refusing), and still refuses a kid no authority has as
// unknown_key. Separate processes on the real engines; the rotations are
// made with NATS up, then with NATS cut off from every process, when the
// other authority learns the new key only from the store (every 500 ms)
// and the gateway has no key announcement to hear.
func TestRotationReachesTheGatewayAtOnce(t *testing.T) {
	natsPx := proctest.NewProxy(t, natsAddr)
	d := newDeployment(t, engines{pg: "127.0.0.1:5432", redis: redisAddr, nats: natsPx.Addr(), maria: mariaAddr})
	a1, a2, admin, cl := d.twoAuthorities()
	tf := filepath.Join(d.dir, "a1", "admin-token")
	admin2 := readToken(t, filepath.Join(d.dir, "a2", "admin-token"))
	g := d.gateway("g1", tf, a1, a2)
	g.waitReady(30 * time.Second)
	member := fmt.Sprint(d.pop.MemberID(1))
	for i := 0; i < 8; i++ {
		at, adm := a1, admin // the gateway asks a1 first
		if i%4 != 3 {
			at, adm = a2, admin2
		}
		if i == 4 {
			natsPx.Cut()
		}
		var k struct {
			KID string `json:"kid"`
		}
		if _, err := call("POST", at.url()+"/v1/keys/rotate", adm, map[string]string{"reason": "drill"}, &k); err != nil {
			t.Fatal(err)
		}
		var out struct {
			AccessToken string `json:"access_token"`
			KID         string `json:"kid"`
		}
		if _, err := call("POST", at.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out); err != nil {
			t.Fatal(err)
		}
		if out.KID != k.KID {
			t.Fatalf("rotation %d at %s made %s, the token right after is signed by %s", i, at.name, k.KID, out.KID)
		}
		if st, reason, err := access(g, out.AccessToken, member); err != nil || st != 200 {
			t.Fatalf("rotation %d at %s (NATS cut: %t): a token of the new key, presented at once: %d %q %v", i, at.name, i >= 4, st, reason, err)
		}
	}
	// A kid no authority has: refused, asked about at most once per 250 ms
	// (after a burst of 4).
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	before, start := unknownKidFetches(t, g), time.Now()
	for i := 0; i < 20; i++ {
		now := time.Now().Unix()
		raw, err := token.Sign(attacker, keys.EdDSA, fmt.Sprint("made-up-", i), token.Claims{Issuer: d.issuer, Subject: member,
			Audience: "shop-api", IssuedAt: now, NotBefore: now, ExpiresAt: now + 300, JTI: fmt.Sprint("forged-", i), ClientID: "login"})
		if err != nil {
			t.Fatal(err)
		}
		if st, reason, err := access(g, raw, member); err != nil || st != 401 || reason != "unknown_key" {
			t.Fatalf("a token under a made-up kid: %d %q %v", st, reason, err)
		}
	}
	took := time.Since(start)
	if n := unknownKidFetches(t, g) - before; n > int(took/(250*time.Millisecond))+4 {
		t.Fatalf("20 made-up kids in %s set off %d key set fetches", took.Round(time.Millisecond), n)
	}
}

// unknownKidFetches reads custos_gateway_unknown_kid_fetches_total from the
// gateway's admin listener.
func unknownKidFetches(t *testing.T, g *proc) int {
	t.Helper()
	resp, err := client.Get(strings.TrimSuffix(g.ready, "/readyz") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "custos_gateway_unknown_kid_fetches_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("no custos_gateway_unknown_kid_fetches_total in the gateway's metrics")
	return 0
}
