package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
)

// DPoPExtraTarget is the DPoP target of the gateway issue: a bound request
// costs at most one more signature verification than an unbound one, on
// the cold and the warm path (with the cold path's 25 % tolerance).
const DPoPExtraTarget = 1 + GatewayColdOverTarget

// DPoPPhase is the cost of DPoP-bound tokens at the gateway: the same
// requests with tokens bound to a client key (a fresh proof each) and
// without, in process, interleaved in chunks, on the thread's CPU clock
// where available (else wall clock). Cold: tokens never seen before; warm:
// tokens whose signature the gateway has verified already. Proofs are signed
// beforehand: the client's signing is not the gateway's cost.
type DPoPPhase struct {
	Requests    int           `json:"requests"` // per path and kind
	CPUClock    bool          `json:"cpu_clock"`
	VerifyPerOp time.Duration `json:"verify_per_op_ns"` // ed25519.Verify, same run
	ColdBearer  time.Duration `json:"cold_bearer_ns"`
	ColdBound   time.Duration `json:"cold_bound_ns"`
	WarmBearer  time.Duration `json:"warm_bearer_ns"`
	WarmBound   time.Duration `json:"warm_bound_ns"`
	// Extra cost of a bound request, in ed25519 verifications.
	ColdExtraVerifies float64 `json:"cold_extra_verifies"`
	WarmExtraVerifies float64 `json:"warm_extra_verifies"`
	Met               bool    `json:"met"`
}

// dpopPhase measures DPoPPhase on n requests of each kind.
func dpopPhase(ctx context.Context, r *running, n int) (*DPoPPhase, error) {
	client := ed25519.NewKeyFromSeed([]byte("bench-dpop-client-key-0123456789"))
	jkt, err := dpop.Thumbprint(client.Public())
	if err != nil {
		return nil, err
	}
	key, signer, err := r.s.Keys.Signer(ctx)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("bench: the signing key is not Ed25519")
	}
	now := time.Now()
	mint := func(i int, bound bool) (*http.Request, string, error) {
		id := strconv.FormatUint(benchPopulation.MemberID(uint64(i%int(benchPopulation.Members))+1), 10)
		c := token.Claims{Issuer: r.s.Authority.Issuer, Subject: id, Audience: config.DefaultAudience,
			IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix(),
			JTI: fmt.Sprintf("bench-dpop-%v-%d", bound, i), ClientID: "bench"}
		if bound {
			c.Cnf.JKT = jkt
		}
		raw, err := token.Sign(signer, key.Alg, key.KID, c)
		if err != nil {
			return nil, "", err
		}
		err = r.s.Ledger.Put(ctx, ledger.Entry{Hash: ledger.HashToken(raw), JTI: c.JTI, KID: key.KID, Subject: id,
			Audience: c.Audience, Client: "bench", IssuedAt: now.UTC(), ExpiresAt: time.Unix(c.ExpiresAt, 0).UTC()})
		if err != nil {
			return nil, "", err
		}
		req, err := http.NewRequestWithContext(ctx, "GET", r.gwURL+"/api/members/"+id+"/profile", nil)
		if err != nil {
			return nil, "", err
		}
		req.RemoteAddr = "127.0.0.1:40000"
		scheme := "Bearer "
		if bound {
			scheme = "DPoP "
		}
		req.Header.Set("Authorization", scheme+raw)
		return req, raw, nil
	}
	// prove gives req a fresh proof of the client key.
	seq := 0
	prove := func(req *http.Request, raw string) error {
		seq++
		p, err := dpop.Sign(client, dpop.NewClaims("bench-"+strconv.Itoa(seq), "GET", req.URL.String(), raw, "", time.Now()))
		req.Header.Set("DPoP", p)
		return err
	}
	type item struct {
		req   *http.Request
		raw   string
		proof string // for the next request
	}
	bearer, bound := make([]item, n), make([]item, n)
	msgs := make([][2][]byte, n) // signing input, signature, for ed25519.Verify
	for i := range n {
		if bearer[i].req, bearer[i].raw, err = mint(i, false); err != nil {
			return nil, err
		}
		if bound[i].req, bound[i].raw, err = mint(i, true); err != nil {
			return nil, err
		}
		p, err := token.Parse(bearer[i].raw)
		if err != nil {
			return nil, err
		}
		msgs[i] = [2][]byte{p.SigningInput, p.Signature}
	}
	status := 0
	h := r.s.Gateway.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { status = http.StatusOK }))
	w := &nopWriter{h: http.Header{}}
	clock, unpin, haveCPU := threadClock()
	defer unpin()
	tick := func() time.Duration {
		if haveCPU {
			return clock()
		}
		return time.Duration(time.Now().UnixNano())
	}
	serve := func(it *item) error {
		if it.proof != "" {
			it.req.Header.Set("DPoP", it.proof)
		}
		status = 0
		h.ServeHTTP(w, it.req)
		if status != http.StatusOK {
			return fmt.Errorf("bench: the gateway refused a good request (%s)", w.h.Get("WWW-Authenticate"))
		}
		return nil
	}
	var sums [5]time.Duration // verify, cold bearer, cold bound, warm bearer, warm bound
	const chunk = 50
	for pass := range 2 { // 0: cold, 1: warm (the same tokens again)
		for start := 0; start < n; start += chunk {
			end := min(start+chunk, n)
			// Proofs signed just before their chunk, so none grows stale.
			for i := start; i < end; i++ {
				if err := prove(bound[i].req, bound[i].raw); err != nil {
					return nil, err
				}
				bound[i].proof = bound[i].req.Header.Get("DPoP")
			}
			if pass == 0 {
				t := tick()
				for _, m := range msgs[start:end] {
					if !ed25519.Verify(pub, m[0], m[1]) {
						return nil, errors.New("bench: a token's signature does not verify")
					}
				}
				sums[0] += tick() - t
			}
			t := tick()
			for i := start; i < end; i++ {
				if err := serve(&bearer[i]); err != nil {
					return nil, err
				}
			}
			sums[1+2*pass] += tick() - t
			t = tick()
			for i := start; i < end; i++ {
				if err := serve(&bound[i]); err != nil {
					return nil, err
				}
			}
			sums[2+2*pass] += tick() - t
		}
	}
	d := time.Duration(n)
	out := &DPoPPhase{Requests: n, CPUClock: haveCPU, VerifyPerOp: sums[0] / d,
		ColdBearer: sums[1] / d, ColdBound: sums[2] / d, WarmBearer: sums[3] / d, WarmBound: sums[4] / d}
	out.ColdExtraVerifies = float64(out.ColdBound-out.ColdBearer) / float64(out.VerifyPerOp)
	out.WarmExtraVerifies = float64(out.WarmBound-out.WarmBearer) / float64(out.VerifyPerOp)
	out.Met = out.ColdExtraVerifies <= DPoPExtraTarget && out.WarmExtraVerifies <= DPoPExtraTarget
	return out, nil
}
