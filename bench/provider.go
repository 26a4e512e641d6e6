package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/token"
)

// ProviderPhase is the cost of tokens of an identity provider the shop
// keeps (package provider) at the gateway, beside custos's own tokens and
// the bare reverse proxy. The provider is configured with an Ed25519 key
// set served on loopback; its tokens are recorded through
// POST /v1/ledger/record with an issuer credential, as a webhook or Auth0
// issuer records them.
//
// In process (thread CPU clock where available): the same kind of request
// with a custos token and with a provider token, never seen (cold) and seen
// before (warm), in chunks that alternate which kind goes first, beside raw
// ed25519.Verify of the custos tokens' signatures. Over HTTP: the peak rate,
// closed loop with warm caches, of the bare proxy, the gateway with custos
// tokens and the gateway with provider tokens, side by side.
type ProviderPhase struct {
	Tokens       int           `json:"tokens"` // per kind, in process
	Chunks       int           `json:"chunks"`
	CPUClock     bool          `json:"cpu_clock"`
	VerifyPerOp  time.Duration `json:"verify_per_op_ns"` // ed25519.Verify, same run
	ColdCustos   time.Duration `json:"cold_custos_ns"`
	ColdProvider time.Duration `json:"cold_provider_ns"`
	WarmCustos   time.Duration `json:"warm_custos_ns"`
	WarmProvider time.Duration `json:"warm_provider_ns"`
	// WarmRatio is WarmProvider / WarmCustos, and its median over chunks.
	WarmRatio       float64 `json:"warm_ratio"`
	WarmRatioMedian float64 `json:"warm_ratio_median"`
	// Signatures verified per request, counted by the gateway.
	Signatures ProviderSignatures `json:"signatures_per_request"`

	BarePeak     Load    `json:"bare_peak"`
	CustosPeak   Load    `json:"custos_peak"`
	ProviderPeak Load    `json:"provider_peak"`
	PeakRatio    float64 `json:"peak_ratio"`        // provider / bare
	PeakVsCustos float64 `json:"peak_vs_custos"`    // provider / custos
	CustosRatio  float64 `json:"custos_peak_ratio"` // custos / bare, same slices
}

// ProviderSignatures is how many token signatures the gateway verified
// per request: 1, 1, 0 and 0 when provider tokens are cached as custos's.
type ProviderSignatures struct {
	ColdCustos   float64 `json:"cold_custos"`
	ColdProvider float64 `json:"cold_provider"`
	WarmCustos   float64 `json:"warm_custos"`
	WarmProvider float64 `json:"warm_provider"`
}

// The benchmark's identity provider.
const (
	benchIDPName   = "bench-idp"
	benchIDPIssuer = "https://idp.bench.invalid/"
	benchIDPKID    = "bench-idp-ed"
	benchIDPClient = "bench-web"
)

// benchIDP is an identity provider made for the benchmark: one Ed25519 key
// published as a JWKS on loopback.
type benchIDP struct {
	key  ed25519.PrivateKey
	url  string
	stop func()
}

func startIDP() (*benchIDP, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: priv.Public(), KeyID: benchIDPKID, Algorithm: string(jose.EdDSA), Use: "sig"}}})
	if err != nil {
		return nil, err
	}
	url, stop, err := serveLoopback(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(set)
	}))
	if err != nil {
		return nil, err
	}
	return &benchIDP{key: priv, url: url + "/jwks", stop: stop}, nil
}

// signer signs as the provider does (typ JWT, its kid).
func (p *benchIDP) signer() (jose.Signer, error) {
	return jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: p.key, KeyID: benchIDPKID}},
		(&jose.SignerOptions{}).WithType("JWT"))
}

// config is the provider's entry in custos's configuration.
func (p *benchIDP) config() config.Provider {
	return config.Provider{Name: benchIDPName, Issuer: benchIDPIssuer, JWKSURL: p.url,
		Audience: config.DefaultAudience, Kind: "webhook"}
}

// providerTokens signs n provider tokens for members from index first on
// and records each through POST /v1/ledger/record with the issuer
// credential cred; it returns them with each member's profile path.
func providerTokens(ctx context.Context, r *running, p *benchIDP, cred string, first, n int) ([]string, []string, error) {
	toks, paths := make([]string, n), make([]string, n)
	now := time.Now()
	exp := now.Add(2 * time.Hour).Unix()
	c := newClient(16)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const par = 16
	for w := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sg, err := p.signer()
			for i := w; i < n && err == nil; i += par {
				k := first + i
				id := strconv.FormatUint(benchPopulation.MemberID(uint64(k%int(benchPopulation.Members))+1), 10)
				jti := "bench-prov-" + strconv.Itoa(k)
				var raw string
				raw, err = jwt.Signed(sg).Claims(map[string]any{"iss": benchIDPIssuer, "sub": id, "aud": config.DefaultAudience,
					"client_id": benchIDPClient, "iat": now.Unix(), "exp": exp, "jti": jti}).Serialize()
				if err == nil {
					err = record(ctx, c, r.apiURL, cred, map[string]any{"iss": benchIDPIssuer, "jti": jti, "sub": id,
						"aud": config.DefaultAudience, "client_id": benchIDPClient, "exp": exp})
				}
				toks[i], paths[i] = raw, "/api/members/"+id+"/profile"
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, nil, err
	default:
	}
	return toks, paths, nil
}

// record posts one record as the provider's issuer does.
func record(ctx context.Context, c *http.Client, api, cred string, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/v1/ledger/record", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cred)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("bench: record: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("bench: record: status %d", resp.StatusCode)
	}
	return nil
}

// providerPhase measures ProviderPhase: n tokens of each kind in process,
// then the three peaks over HTTP for d each.
func providerPhase(ctx context.Context, r *running, p *benchIDP, client *authority.Client, n, workers int, d time.Duration, bare, custos RequestFunc) (*ProviderPhase, error) {
	_, cred, err := r.s.Creds.Add(ctx, authority.NewCredential{Name: "bench-idp", Role: authority.RoleIssuer, Provider: benchIDPName}, "bench")
	if err != nil {
		return nil, fmt.Errorf("issuer credential: %w", err)
	}
	ctoks, cpaths, err := issueMany(ctx, r, client, n)
	if err != nil {
		return nil, err
	}
	ptoks, ppaths, err := providerTokens(ctx, r, p, cred, 0, n)
	if err != nil {
		return nil, err
	}
	key, _, err := r.s.Keys.Signer(ctx)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("bench: the signing key is not Ed25519")
	}
	msgs := make([][2][]byte, n)
	for i, t := range ctoks {
		pt, err := token.Parse(t)
		if err != nil {
			return nil, err
		}
		msgs[i] = [2][]byte{pt.SigningInput, pt.Signature}
	}
	requests := func(toks, paths []string) ([]*http.Request, error) {
		out := make([]*http.Request, len(toks))
		for i := range toks {
			req, err := http.NewRequestWithContext(ctx, "GET", r.gwURL+paths[i], nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "Bearer "+toks[i])
			req.RemoteAddr = "127.0.0.1:40000"
			out[i] = req
		}
		return out, nil
	}
	creqs, err := requests(ctoks, cpaths)
	if err != nil {
		return nil, err
	}
	preqs, err := requests(ptoks, ppaths)
	if err != nil {
		return nil, err
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
	sigs := func() uint64 { t, _ := r.s.Gateway.SignatureChecks(); return t }
	run := func(reqs []*http.Request) (time.Duration, uint64, error) {
		s0, t := sigs(), tick()
		for _, req := range reqs {
			status = 0
			h.ServeHTTP(w, req)
			if status != http.StatusOK {
				return 0, 0, fmt.Errorf("bench: the gateway refused a good request (%s)", w.h.Get("WWW-Authenticate"))
			}
		}
		return tick() - t, sigs() - s0, nil
	}
	type pass struct {
		verify, custos, prov time.Duration
		custosSigs, provSigs uint64
		ratio                []float64 // provider / custos per chunk
	}
	var passes [2]pass // cold, then warm (the same tokens again)
	const chunk = 50
	for pi := range passes {
		ps := &passes[pi]
		runtime.GC()
		for c, start := 0, 0; start < n; c, start = c+1, start+chunk {
			end := min(start+chunk, n)
			var a, b time.Duration
			var as, bs uint64
			var err error
			if c%2 == 0 {
				if a, as, err = run(creqs[start:end]); err == nil {
					b, bs, err = run(preqs[start:end])
				}
			} else if b, bs, err = run(preqs[start:end]); err == nil {
				a, as, err = run(creqs[start:end])
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
			ps.verify += tick() - t
			ps.custos, ps.prov = ps.custos+a, ps.prov+b
			ps.custosSigs, ps.provSigs = ps.custosSigs+as, ps.provSigs+bs
			if a > 0 {
				ps.ratio = append(ps.ratio, float64(b)/float64(a))
			}
		}
	}
	dn := time.Duration(n)
	cold, warm := &passes[0], &passes[1]
	out := &ProviderPhase{Tokens: n, Chunks: (n + chunk - 1) / chunk, CPUClock: haveCPU,
		VerifyPerOp: (cold.verify + warm.verify) / (2 * dn),
		ColdCustos:  cold.custos / dn, ColdProvider: cold.prov / dn, WarmCustos: warm.custos / dn, WarmProvider: warm.prov / dn,
		WarmRatioMedian: median(warm.ratio),
		Signatures: ProviderSignatures{
			ColdCustos: float64(cold.custosSigs) / float64(n), ColdProvider: float64(cold.provSigs) / float64(n),
			WarmCustos: float64(warm.custosSigs) / float64(n), WarmProvider: float64(warm.provSigs) / float64(n),
		}}
	if warm.custos > 0 {
		out.WarmRatio = float64(warm.prov) / float64(warm.custos)
	}

	// Peaks over HTTP: provider tokens for the same members as the warm
	// phase's custos tokens, seen once before the run.
	htoks, hpaths, err := providerTokens(ctx, r, p, cred, n, warmTokens)
	if err != nil {
		return nil, err
	}
	prov := func(w, seq int) (*http.Request, error) {
		i := (w*31 + seq) % len(hpaths)
		req, err := http.NewRequestWithContext(ctx, "GET", r.gwURL+hpaths[i], nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+htoks[i])
		return req, nil
	}
	for i := range hpaths {
		req, _ := prov(0, i)
		if err := send(http.DefaultClient, req); err != nil {
			return nil, fmt.Errorf("warm-up request with a provider token: %w", err)
		}
	}
	loads, err := alternate(d, func(t RequestFunc, d time.Duration) (Load, error) { return ClosedLoop(ctx, workers, d, t) }, bare, custos, prov)
	if err != nil {
		return nil, err
	}
	out.BarePeak, out.CustosPeak, out.ProviderPeak = loads[0], loads[1], loads[2]
	if out.BarePeak.PerSec > 0 {
		out.PeakRatio = out.ProviderPeak.PerSec / out.BarePeak.PerSec
		out.CustosRatio = out.CustosPeak.PerSec / out.BarePeak.PerSec
	}
	if out.CustosPeak.PerSec > 0 {
		out.PeakVsCustos = out.ProviderPeak.PerSec / out.CustosPeak.PerSec
	}
	return out, nil
}

// alternate runs each target in turn in slices of about a second, d in all
// for each, so that all see the same load from the rest of a shared
// machine; the slices of each are merged.
func alternate(d time.Duration, run func(RequestFunc, time.Duration) (Load, error), targets ...RequestFunc) ([]Load, error) {
	rounds := max(1, int(d/time.Second))
	slice := d / time.Duration(rounds)
	out := make([]Load, len(targets))
	for range rounds {
		for i, t := range targets {
			l, err := run(t, slice)
			if err != nil {
				return out, fmt.Errorf("target %d: %w", i, err)
			}
			out[i] = out[i].merge(l)
		}
	}
	return out, nil
}
