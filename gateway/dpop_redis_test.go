package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/custos-dev/custos/dpop"
	dpopredis "github.com/custos-dev/custos/dpop/redis"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/testenv"
)

// Two gateway replicas sharing a replay cache in a real Redis: a proof used
// at one is refused at the other, and with Redis gone proofs are refused
// (fail closed) rather than let through unchecked.
func TestDPoPReplayAcrossReplicas(t *testing.T) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "custos-test-gw-dpop-" + hex.EncodeToString(b[:]) + ":"
	ctx := context.Background()
	ra, err := dpopredis.Open(ctx, "redis://127.0.0.1:6379/0", prefix, nil)
	testenv.Require(t, "redis 127.0.0.1:6379", err)
	defer ra.Close()
	rb, err := dpopredis.Open(ctx, "redis://127.0.0.1:6379/0", prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := newEnv(t, testConfig())
	bound := a.issue(t, boundClaims(t))
	r := newEnv(t, testConfig())
	r.g.checker.Keys, r.g.checker.Ledger = a.ks, a.led
	a.g.SetReplay(ra)
	r.g.SetReplay(rb)

	p := proofFor(t, clientKey, "GET", memberURL, bound, nil)
	assertDPoP(t, a, a.send("GET", "DPoP", bound, p), "")
	assertDPoP(t, r, r.send("GET", "DPoP", bound, p), event.ReasonBadDPoPProof)
	assertDPoP(t, a, a.send("GET", "DPoP", bound, p), event.ReasonBadDPoPProof)
	// A fresh proof passes at either.
	assertDPoP(t, r, r.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil)), "")

	rb.Close()
	assertDPoP(t, r, r.send("GET", "DPoP", bound, proofFor(t, clientKey, "GET", memberURL, bound, nil)), event.ReasonBadDPoPProof)
	var _ dpop.Replay = ra
}
