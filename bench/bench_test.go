package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// short keeps each measured phase around a second so the whole file runs in
// a few seconds; the figures are only checked for sanity.
var short = Options{Duration: time.Second, Concurrency: 16}

func TestRunIssuance(t *testing.T) {
	for _, client := range []string{ClientLean, ClientNetHTTP} {
		t.Run(client, func(t *testing.T) { testRunIssuance(t, client) })
	}
	if _, err := RunIssuance(context.Background(), Options{Duration: time.Second, Client: "curl", Dir: t.TempDir()}); err == nil {
		t.Fatal("unknown client accepted")
	}
}

func testRunIssuance(t *testing.T, client string) {
	r, err := RunIssuance(context.Background(), Options{Duration: time.Second, Concurrency: 32, Dir: t.TempDir(), Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if r.Client != client {
		t.Fatalf("ran with client %q, asked for %q", r.Client, client)
	}
	if r.Load.Requests == 0 || r.TokensPerS <= 0 || r.SignPerS <= 0 || r.SignProcs < 1 {
		t.Fatalf("no rate measured: %+v", r)
	}
	if r.Load.Errors != 0 {
		t.Fatalf("%d failed token requests (first: %s)", r.Load.Errors, r.Load.FirstErr)
	}
	if want := r.TokensPerS / r.SignPerS; r.Ratio != want || r.Ratio <= 0 {
		t.Fatalf("ratio %v, want %v", r.Ratio, want)
	}
	if r.Load.P50 <= 0 || r.Load.P99 < r.Load.P50 {
		t.Fatalf("latency p50 %v p99 %v", r.Load.P50, r.Load.P99)
	}
	if r.Met != (r.TokensPerS >= IssuanceTarget) {
		t.Fatalf("met %v for %v tokens/s", r.Met, r.TokensPerS)
	}
	// The server burns CPU, and the split accounts for all of it. The lean
	// generator costs a few µs a token: over a short run at 100 samples/s
	// it may get none, so only its sign is checked.
	c := r.CPU
	if c.Samples == 0 || c.Generator < 0 || c.Server <= 0 || c.Server+c.Generator != c.Total || r.Load.Completed < r.Load.Requests {
		t.Fatalf("CPU split %+v over %d completed", c, r.Load.Completed)
	}
	if r.ServerCPUPerToken <= 0 || r.ServerCapacity <= 0 {
		t.Fatalf("server CPU per token %v, capacity %v", r.ServerCPUPerToken, r.ServerCapacity)
	}
}

func TestRunGateway(t *testing.T) {
	o := short
	o.Dir = t.TempDir()
	g, err := RunGateway(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]Load{"bare peak": g.BarePeak, "gateway peak": g.GatewayPeak, "bare half": g.BareHalf, "gateway half": g.GatewayHalf} {
		if l.Requests == 0 || l.PerSec <= 0 || l.P99 <= 0 {
			t.Fatalf("%s: nothing measured: %+v", name, l)
		}
		if l.Errors != 0 {
			t.Fatalf("%s: %d errors (first: %s)", name, l.Errors, l.FirstErr)
		}
	}
	if want := g.GatewayPeak.PerSec / g.BarePeak.PerSec; g.PeakRatio != want {
		t.Fatalf("peak ratio %v, want %v", g.PeakRatio, want)
	}
	if g.HalfRate != g.BarePeak.PerSec/2 || g.AddedP99 != g.GatewayHalf.P99-g.BareHalf.P99 {
		t.Fatalf("half rate %v, added p99 %v: %+v", g.HalfRate, g.AddedP99, g)
	}
	if g.ColdTokens == 0 || g.ColdPerReq <= 0 || g.VerifyPerOp <= 0 || g.ColdOverhead == 0 {
		t.Fatalf("cold path not measured: %+v", g)
	}
	if p := g.DPoP; p == nil || p.Requests == 0 || p.VerifyPerOp <= 0 || p.ColdBound <= 0 || p.WarmBound <= 0 || p.ColdBearer <= 0 || p.WarmBearer <= 0 ||
		p.Chunks == 0 || p.ColdExtraMedian == 0 || p.WarmExtraMedian == 0 {
		t.Fatalf("DPoP phase not measured: %+v", g.DPoP)
	}
	// The signatures the gateway verified, counted: the token's once, then
	// only the proof's.
	if s, want := g.DPoP.Signatures, (DPoPSignatures{ColdBearer: 1, ColdBound: 2, WarmBearer: 0, WarmBound: 1}); s != want {
		t.Fatalf("signatures per request %+v, want %+v", s, want)
	}
	// Every gateway request of the half-rate phase (warm-up included) was
	// timed inside the gateway.
	if g.OverheadN < uint64(g.GatewayHalf.Requests) || g.OverheadP50 <= 0 || g.OverheadP99 < g.OverheadP50 {
		t.Fatalf("gateway overhead: %d requests, p50 %v, p99 %v (half-rate requests %d)", g.OverheadN, g.OverheadP50, g.OverheadP99, g.GatewayHalf.Requests)
	}
	// An identity provider's tokens: measured cold and warm beside
	// custos's, the warm ones verifying no signature, and at peak.
	p := g.Provider
	if p == nil || p.Tokens == 0 || p.ColdCustos <= 0 || p.ColdProvider <= 0 || p.WarmCustos <= 0 || p.WarmProvider <= 0 || p.VerifyPerOp <= 0 ||
		p.WarmRatio == 0 || p.WarmRatioMedian == 0 {
		t.Fatalf("provider phase not measured: %+v", p)
	}
	if s, want := p.Signatures, (ProviderSignatures{ColdCustos: 1, ColdProvider: 1}); s != want {
		t.Fatalf("provider phase: signatures per request %+v, want %+v", s, want)
	}
	for name, l := range map[string]Load{"bare": p.BarePeak, "custos": p.CustosPeak, "provider": p.ProviderPeak} {
		if l.Requests == 0 || l.PerSec <= 0 || l.Errors != 0 {
			t.Fatalf("provider phase, %s peak: %+v", name, l)
		}
	}
	if p.PeakRatio != p.ProviderPeak.PerSec/p.BarePeak.PerSec || p.PeakVsCustos != p.ProviderPeak.PerSec/p.CustosPeak.PerSec {
		t.Fatalf("provider phase ratios: %+v", p)
	}
	var buf bytes.Buffer
	Report{Machine: ThisMachine(), Gateway: &g}.WriteText(&buf)
	for _, want := range []string{"ratio", "added p99", "ed25519.Verify", "signatures    verified per request, counted: cold bearer 1.00, bound 2.00; warm bearer 0.00, bound 1.00",
		"signatures  verified per request, counted: cold custos 1.00, provider 1.00; warm custos 0.00, provider 0.00", "provider tokens"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, buf.String())
		}
	}
	var js bytes.Buffer
	if err := json.NewEncoder(&js).Encode(Report{Gateway: &g}); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Gateway struct {
			Provider *ProviderPhase `json:"provider"`
		} `json:"gateway"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Gateway.Provider == nil || back.Gateway.Provider.WarmProvider != p.WarmProvider {
		t.Fatalf("the JSON report's provider object: %v %s", err, js.String())
	}
}

// The decision benchmark measures every phase with no error: every one of
// its distinct tokens is allowed through nginx and both endpoints, and each
// endpoint's decisions were all timed inside the gateway.
func TestRunDecide(t *testing.T) {
	o := short
	o.Dir = t.TempDir()
	dc, err := RunDecide(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	loads := map[string]Load{"http": dc.HTTP.Load, "grpc": dc.GRPC.Load}
	if dc.NginxAlone != nil {
		loads["nginx alone"], loads["nginx auth"] = *dc.NginxAlone, *dc.NginxAuth
		if dc.NginxRatio != dc.NginxAuth.PerSec/dc.NginxAlone.PerSec {
			t.Fatalf("nginx ratio %v", dc.NginxRatio)
		}
	} else if _, err := exec.LookPath("nginx"); err == nil {
		t.Fatal("nginx is installed but was not measured")
	}
	for name, l := range loads {
		if l.Requests == 0 || l.PerSec <= 0 || l.Errors != 0 {
			t.Fatalf("%s: %+v (first error %s)", name, l, l.FirstErr)
		}
	}
	for name, ep := range map[string]Endpoint{"http": dc.HTTP, "grpc": dc.GRPC} {
		if ep.OverheadN < uint64(ep.Load.Requests) || ep.ServerCPUPerDecision <= 0 || ep.OverheadP99 < ep.OverheadP50 {
			t.Fatalf("%s: %+v", name, ep)
		}
	}
	if dc.Tokens != decideTokens || dc.OwnN == 0 || dc.OwnP50 <= 0 || dc.OwnP99 < dc.OwnP50 {
		t.Fatalf("%+v", dc)
	}
	var buf bytes.Buffer
	Report{Machine: ThisMachine(), Decide: &dc}.WriteText(&buf)
	for _, want := range []string{"decisions/s", "CPU per decision", "own time"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, buf.String())
		}
	}
}

// The load generator counts answers that are not 2xx as errors, not as
// throughput, and fails a run in which nothing succeeded.
func TestLoadCountsFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	req := func(path string) RequestFunc {
		return func(w, seq int) (*http.Request, error) { return http.NewRequest("GET", srv.URL+path, nil) }
	}
	tests := []struct {
		name    string
		path    string
		open    bool
		wantErr bool
	}{
		{"ok/closed", "/", false, false},
		{"ok/open", "/", true, false},
		{"fail/closed-all-refused", "/bad", false, true},
		{"fail/open-all-refused", "/bad", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l Load
			var err error
			if tc.open {
				l, err = OpenLoop(context.Background(), 200, 4, 300*time.Millisecond, req(tc.path))
			} else {
				l, err = ClosedLoop(context.Background(), 4, 300*time.Millisecond, req(tc.path))
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v (%+v)", err, tc.wantErr, l)
			}
			if tc.wantErr && (l.Requests != 0 || l.Errors == 0 || !strings.Contains(l.FirstErr, "401")) {
				t.Fatalf("refusals counted wrong: %+v", l)
			}
			if !tc.wantErr && (l.Requests == 0 || l.Errors != 0 || l.PerSec <= 0) {
				t.Fatalf("nothing counted: %+v", l)
			}
			if tc.open && !tc.wantErr && (l.Requests < 30 || l.Requests > 70) {
				t.Fatalf("open loop at 200/s for 0.3 s sent %d", l.Requests)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a := Load{Elapsed: time.Second, Requests: 2, lat: []time.Duration{1, 3}}
	b := Load{Elapsed: time.Second, Requests: 2, Errors: 1, FirstErr: "x", lat: []time.Duration{2, 100}}
	m := Load{}.merge(a).merge(b)
	if m.Requests != 4 || m.Errors != 1 || m.FirstErr != "x" || m.PerSec != 2 || m.P50 != 3 || m.P99 != 100 {
		t.Fatalf("merged %+v", m)
	}
}

func TestQuantileBound(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004}
	before := []uint64{5, 5, 5, 5} // cumulative per bucket, then the total
	// 100 new observations: 90 ≤ 1 ms, 9 in (1, 2] ms, 1 past 4 ms.
	after := []uint64{95, 104, 104, 105}
	if got := quantileBound(before, after, bounds, 0.5); got != time.Millisecond {
		t.Fatalf("p50 bound %v", got)
	}
	if got := quantileBound(before, after, bounds, 0.99); got != 2*time.Millisecond {
		t.Fatalf("p99 bound %v", got)
	}
	if got := quantileBound(before, after, bounds, 1); got != -1 {
		t.Fatalf("max past the last bound: %v", got)
	}
	if got := quantileBound(after, after, bounds, 0.99); got != 0 {
		t.Fatalf("nothing observed: %v", got)
	}
}

// The DPoP target fails on a count of signatures above one extra, whatever
// the timing says, and on a median above the target.
func TestDPoPJudge(t *testing.T) {
	good := DPoPPhase{ColdExtraMedian: 1.1, WarmExtraMedian: 1.05,
		Signatures: DPoPSignatures{ColdBearer: 1, ColdBound: 2, WarmBearer: 0, WarmBound: 1}}
	good.judge()
	if !good.Met {
		t.Fatalf("met false for %+v", good)
	}
	for name, edit := range map[string]func(*DPoPPhase){
		"warm path verifies the token again": func(p *DPoPPhase) { p.Signatures.WarmBound = 2 },
		"cold bound verifies three":          func(p *DPoPPhase) { p.Signatures.ColdBound = 3 },
		"warm median over target":            func(p *DPoPPhase) { p.WarmExtraMedian = DPoPExtraTarget + 0.01 },
		"cold median over target":            func(p *DPoPPhase) { p.ColdExtraMedian = DPoPExtraTarget + 0.01 },
	} {
		p := good
		edit(&p)
		if p.judge(); p.Met {
			t.Errorf("%s: met", name)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
