package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
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
// without, in process, on the thread's CPU clock where available (else wall
// clock). Cold: tokens never seen before; warm: tokens whose signature the
// gateway has verified already. Proofs are signed before each pass, outside
// the clock: the client's signing is not the gateway's cost.
//
// Each pass runs in chunks; a chunk times its bearer requests, its bound
// requests (which of the two goes first alternates from chunk to chunk) and
// raw ed25519.Verify of as many token signatures, so every chunk has its own
// unit. The extra cost of a bound request is given as the mean over the pass
// and as the median over its chunks, which a burst of other work on a shared
// machine moves far less. Signatures counts what the gateway verified.
type DPoPPhase struct {
	Requests    int           `json:"requests"` // per path and kind
	Chunks      int           `json:"chunks"`   // per path
	CPUClock    bool          `json:"cpu_clock"`
	VerifyPerOp time.Duration `json:"verify_per_op_ns"` // ed25519.Verify, same run
	ColdBearer  time.Duration `json:"cold_bearer_ns"`
	ColdBound   time.Duration `json:"cold_bound_ns"`
	WarmBearer  time.Duration `json:"warm_bearer_ns"`
	WarmBound   time.Duration `json:"warm_bound_ns"`
	// Extra cost of a bound request, in ed25519 verifications: over the
	// whole pass (mean), and the median of the chunks' own figures.
	ColdExtraVerifies float64 `json:"cold_extra_verifies"`
	WarmExtraVerifies float64 `json:"warm_extra_verifies"`
	ColdExtraMedian   float64 `json:"cold_extra_verifies_median"`
	WarmExtraMedian   float64 `json:"warm_extra_verifies_median"`
	// Signatures verified per request, counted by the gateway.
	Signatures DPoPSignatures `json:"signatures_per_request"`
	Met        bool           `json:"met"`
}

// DPoPSignatures is how many signatures (token and proof) the gateway
// verified per request on each path: 1, 2, 0 and 1 when the warm path
// verifies only the proof.
type DPoPSignatures struct {
	ColdBearer float64 `json:"cold_bearer"`
	ColdBound  float64 `json:"cold_bound"`
	WarmBearer float64 `json:"warm_bearer"`
	WarmBound  float64 `json:"warm_bound"`
}

// judge sets Met: on both paths a bound request verifies at most one
// signature more than a bearer one, counted, and costs at most
// DPoPExtraTarget verifications more, by the median over chunks.
func (p *DPoPPhase) judge() {
	s := p.Signatures
	p.Met = s.ColdBound-s.ColdBearer <= 1 && s.WarmBound-s.WarmBearer <= 1 &&
		p.ColdExtraMedian <= DPoPExtraTarget && p.WarmExtraMedian <= DPoPExtraTarget
}

// median of xs (reordered).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m]
	}
	return (xs[m-1] + xs[m]) / 2
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
	seq := 0
	// prove signs a fresh proof for every bound request, before a pass.
	prove := func() error {
		for i := range bound {
			seq++
			p, err := dpop.Sign(client, dpop.NewClaims("bench-"+strconv.Itoa(seq), "GET", bound[i].req.URL.String(), bound[i].raw, "", time.Now()))
			if err != nil {
				return err
			}
			bound[i].proof = p
		}
		return nil
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
	sigs := func() uint64 {
		t, p := r.s.Gateway.SignatureChecks()
		return t + p
	}
	// run times its items and counts the signatures they cost.
	run := func(items []item) (time.Duration, uint64, error) {
		s0, t := sigs(), tick()
		for i := range items {
			if err := serve(&items[i]); err != nil {
				return 0, 0, err
			}
		}
		return tick() - t, sigs() - s0, nil
	}
	type pass struct {
		verify, bearer, bound time.Duration
		bearerSigs, boundSigs uint64
		extra                 []float64 // per chunk
	}
	var passes [2]pass // cold, then warm (the same tokens again)
	const chunk = 50
	for pi := range passes {
		ps := &passes[pi]
		if err := prove(); err != nil {
			return nil, err
		}
		runtime.GC() // the signing's garbage is not the gateway's
		for c, start := 0, 0; start < n; c, start = c+1, start+chunk {
			end := min(start+chunk, n)
			var a, b time.Duration
			var as, bs uint64
			var err error
			if c%2 == 0 {
				if a, as, err = run(bearer[start:end]); err == nil {
					b, bs, err = run(bound[start:end])
				}
			} else {
				if b, bs, err = run(bound[start:end]); err == nil {
					a, as, err = run(bearer[start:end])
				}
			}
			if err != nil {
				return nil, err
			}
			t := tick()
			for _, m := range msgs[start:end] {
				if !ed25519.Verify(pub, m[0], m[1]) {
					return nil, errors.New("bench: a token's signature does not verify")
				}
			}
			v := tick() - t
			ps.verify += v
			ps.bearer += a
			ps.bound += b
			ps.bearerSigs += as
			ps.boundSigs += bs
			if v > 0 {
				ps.extra = append(ps.extra, float64(b-a)/float64(v))
			}
		}
	}
	d := time.Duration(n)
	cold, warm := &passes[0], &passes[1]
	out := &DPoPPhase{Requests: n, Chunks: (n + chunk - 1) / chunk, CPUClock: haveCPU,
		VerifyPerOp: (cold.verify + warm.verify) / (2 * d),
		ColdBearer:  cold.bearer / d, ColdBound: cold.bound / d, WarmBearer: warm.bearer / d, WarmBound: warm.bound / d,
		ColdExtraVerifies: float64(cold.bound-cold.bearer) / float64(cold.verify),
		WarmExtraVerifies: float64(warm.bound-warm.bearer) / float64(warm.verify),
		ColdExtraMedian:   median(cold.extra),
		WarmExtraMedian:   median(warm.extra),
		Signatures: DPoPSignatures{
			ColdBearer: float64(cold.bearerSigs) / float64(n), ColdBound: float64(cold.boundSigs) / float64(n),
			WarmBearer: float64(warm.bearerSigs) / float64(n), WarmBound: float64(warm.boundSigs) / float64(n),
		}}
	out.judge()
	return out, nil
}
