package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a run took place; the load average matters on a
// shared machine.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	LoadAvg    string `json:"loadavg"` // /proc/loadavg's first three fields, "" elsewhere
}

// ThisMachine reads the machine's description now.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// Report is one `custos bench` run.
type Report struct {
	Machine   Machine   `json:"machine"`
	LoadAfter string    `json:"loadavg_after"`
	Duration  string    `json:"duration"`
	Issuance  *Issuance `json:"issuance,omitempty"`
	Gateway   *Gateway  `json:"gateway,omitempty"`
	Decide    *Decide   `json:"decide,omitempty"`
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

// WriteText writes the report for people.
func (r Report) WriteText(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs, GOMAXPROCS %d, %s, load average %s (after: %s); phase duration %s\n",
		m.CPUs, m.GOMAXPROCS, m.GoVersion, m.LoadAvg, r.LoadAfter, r.Duration)
	if i := r.Issuance; i != nil {
		fmt.Fprintf(w, "\nissuance (POST /v1/tokens, loopback HTTP, sealed keyring, durable SQLite ledger, %d keep-alive workers, %s client):\n", i.Load.Workers, i.Client)
		fmt.Fprintf(w, "  tokens/s        %10.0f   (%d tokens, %d errors in %s)\n", i.TokensPerS, i.Load.Requests, i.Load.Errors, i.Load.Elapsed.Round(time.Millisecond))
		fmt.Fprintf(w, "  latency         p50 %s, p99 %s\n", ms(i.Load.P50), ms(i.Load.P99))
		fmt.Fprintf(w, "  raw ed25519.Sign%10.0f/s on %d goroutines (ceiling, same run)\n", i.SignPerS, i.SignProcs)
		fmt.Fprintf(w, "  ratio           %10.2f   of the signing ceiling\n", i.Ratio)
		fmt.Fprintf(w, "  target          %10.0f tokens/s: %s\n", i.Target, metText(i.Met))
		if i.ServerCPUPerToken > 0 {
			fmt.Fprintf(w, "  CPU per token   server %s, load generator %s (process %s over %d tokens; split by %d profile samples)\n",
				us(i.ServerCPUPerToken), us(i.GeneratorCPUPerTok), i.CPU.Total.Round(time.Millisecond), i.Load.Completed, i.CPU.Samples)
			fmt.Fprintf(w, "  server alone   %10.0f tokens/s on %d cores (computed from the server's CPU per token, clients elsewhere)\n", i.ServerCapacity, m.GOMAXPROCS)
		}
	}
	if g := r.Gateway; g != nil {
		fmt.Fprintf(w, "\ngateway (in-process gateway vs bare httputil.ReverseProxy, same sample-shop upstream, loopback):\n")
		fmt.Fprintf(w, "  peak, closed loop, %d workers, warm caches:\n", g.BarePeak.Workers)
		fmt.Fprintf(w, "    bare proxy    %10.0f req/s  p50 %s p99 %s (%d errors)\n", g.BarePeak.PerSec, ms(g.BarePeak.P50), ms(g.BarePeak.P99), g.BarePeak.Errors)
		fmt.Fprintf(w, "    gateway       %10.0f req/s  p50 %s p99 %s (%d errors)\n", g.GatewayPeak.PerSec, ms(g.GatewayPeak.P50), ms(g.GatewayPeak.P99), g.GatewayPeak.Errors)
		fmt.Fprintf(w, "    ratio         %10.2f   target ≥ %.2f: %s\n", g.PeakRatio, GatewayRatioTarget, metText(g.PeakMet))
		fmt.Fprintf(w, "  latency, open loop at %.0f req/s (half the bare peak), %d workers:\n", g.HalfRate, g.BareHalf.Workers)
		fmt.Fprintf(w, "    bare proxy    p50 %s p99 %s (%.0f req/s done, %d errors, %d sent late)\n", ms(g.BareHalf.P50), ms(g.BareHalf.P99), g.BareHalf.PerSec, g.BareHalf.Errors, g.BareHalf.Late)
		fmt.Fprintf(w, "    gateway       p50 %s p99 %s (%.0f req/s done, %d errors, %d sent late)\n", ms(g.GatewayHalf.P50), ms(g.GatewayHalf.P99), g.GatewayHalf.PerSec, g.GatewayHalf.Errors, g.GatewayHalf.Late)
		fmt.Fprintf(w, "    added p50     %s\n", ms(g.AddedP50))
		fmt.Fprintf(w, "    added p99     %s   (difference of end-to-end p99s: noise on a shared machine)\n", ms(g.AddedP99))
		fmt.Fprintf(w, "    gateway's own time per request, inside (%d requests, histogram bucket bounds): p50 ≤ %s, p99 ≤ %s   target added p99 ≤ %s: %s\n",
			g.OverheadN, ms(g.OverheadP50), ms(g.OverheadP99), ms(GatewayAddedP99), metText(g.OverheadP99Met))
		fmt.Fprintf(w, "  cold path (first-seen token, gateway checks in process, %d tokens):\n", g.ColdTokens)
		fmt.Fprintf(w, "    gateway       %s per request\n", us(g.ColdPerReq))
		fmt.Fprintf(w, "    ed25519.Verify %s per op (same tokens, interleaved)\n", us(g.VerifyPerOp))
		fmt.Fprintf(w, "    overhead      %+.0f %% (wall clock)\n", g.ColdOverhead*100)
		if g.ColdCPUPerReq > 0 {
			fmt.Fprintf(w, "    thread CPU    gateway %s, ed25519.Verify %s: overhead %+.0f %%\n", us(g.ColdCPUPerReq), us(g.VerifyCPUPerOp), g.ColdCPUOverhead*100)
		}
		fmt.Fprintf(w, "    target        overhead ≤ +%.0f %% (on thread CPU where measured): %s\n", GatewayColdOverTarget*100, metText(g.ColdMet))
		if p := g.DPoP; p != nil {
			clk := "wall clock"
			if p.CPUClock {
				clk = "thread CPU"
			}
			fmt.Fprintf(w, "  DPoP-bound tokens (fresh proof per request, in process, %d requests of each kind in %d chunks, %s):\n", p.Requests, p.Chunks, clk)
			s := p.Signatures
			fmt.Fprintf(w, "    cold          bearer %s, bound %s: +%.2f ed25519.Verify (median of chunks), +%.2f (mean), %s per op\n", us(p.ColdBearer), us(p.ColdBound), p.ColdExtraMedian, p.ColdExtraVerifies, us(p.VerifyPerOp))
			fmt.Fprintf(w, "    warm          bearer %s, bound %s: +%.2f ed25519.Verify (median of chunks), +%.2f (mean)\n", us(p.WarmBearer), us(p.WarmBound), p.WarmExtraMedian, p.WarmExtraVerifies)
			fmt.Fprintf(w, "    signatures    verified per request, counted: cold bearer %.2f, bound %.2f; warm bearer %.2f, bound %.2f\n", s.ColdBearer, s.ColdBound, s.WarmBearer, s.WarmBound)
			fmt.Fprintf(w, "    target        ≤ 1 signature more (counted) and ≤ +%.2f verifications (median) on both: %s\n", DPoPExtraTarget, metText(p.Met))
		}
		if p := g.Provider; p != nil {
			clk := "wall clock"
			if p.CPUClock {
				clk = "thread CPU"
			}
			fmt.Fprintf(w, "  identity provider's tokens (Ed25519, recorded through POST /v1/ledger/record), beside custos's:\n")
			fmt.Fprintf(w, "    in process, %d tokens of each kind in %d chunks, %s:\n", p.Tokens, p.Chunks, clk)
			fmt.Fprintf(w, "      cold        custos %s, provider %s per request (ed25519.Verify %s per op)\n", us(p.ColdCustos), us(p.ColdProvider), us(p.VerifyPerOp))
			fmt.Fprintf(w, "      warm        custos %s, provider %s per request: provider/custos %.2f (median of chunks %.2f)\n", us(p.WarmCustos), us(p.WarmProvider), p.WarmRatio, p.WarmRatioMedian)
			s := p.Signatures
			fmt.Fprintf(w, "      signatures  verified per request, counted: cold custos %.2f, provider %.2f; warm custos %.2f, provider %.2f\n", s.ColdCustos, s.ColdProvider, s.WarmCustos, s.WarmProvider)
			fmt.Fprintf(w, "    peak, closed loop, %d workers, warm caches, side by side:\n", p.BarePeak.Workers)
			for _, l := range []struct {
				name string
				l    Load
			}{{"bare proxy", p.BarePeak}, {"custos tokens", p.CustosPeak}, {"provider tokens", p.ProviderPeak}} {
				fmt.Fprintf(w, "      %-15s %10.0f req/s  p50 %s p99 %s (%d errors)\n", l.name, l.l.PerSec, ms(l.l.P50), ms(l.l.P99), l.l.Errors)
			}
			fmt.Fprintf(w, "      ratios      provider/bare %.2f, custos/bare %.2f, provider/custos %.2f\n", p.PeakRatio, p.CustosRatio, p.PeakVsCustos)
		}
	}
	if dc := r.Decide; dc != nil {
		fmt.Fprintf(w, "\ndecision API (in-process gateway's GET /v1/decide and ext_authz gRPC Check, loopback, %d distinct tokens on subject-bound routes):\n", dc.Tokens)
		if dc.NginxAlone != nil {
			a, b := dc.NginxAlone, dc.NginxAuth
			fmt.Fprintf(w, "  nginx in front of the sample shop, closed loop, %d workers, side by side:\n", a.Workers)
			fmt.Fprintf(w, "    nginx alone        %10.0f req/s  p50 %s p99 %s (%d errors)\n", a.PerSec, ms(a.P50), ms(a.P99), a.Errors)
			fmt.Fprintf(w, "    nginx+auth_request %10.0f req/s  p50 %s p99 %s (%d errors)\n", b.PerSec, ms(b.P50), ms(b.P99), b.Errors)
			fmt.Fprintf(w, "    ratio              %10.2f   target ≥ %.2f: %s\n", dc.NginxRatio, DecideNginxRatioTarget, metText(dc.NginxMet))
		} else {
			fmt.Fprintf(w, "  nginx: skipped (%s)\n", dc.NginxSkip)
		}
		for _, e := range []struct {
			name string
			ep   Endpoint
		}{{"HTTP /v1/decide", dc.HTTP}, {"gRPC Check", dc.GRPC}} {
			l := e.ep.Load
			fmt.Fprintf(w, "  %-16s %10.0f decisions/s, %d workers, client p50 %s p99 %s (%d errors)\n", e.name, l.PerSec, l.Workers, ms(l.P50), ms(l.P99), l.Errors)
			fmt.Fprintf(w, "    CPU per decision  server %s (process %s over %d decisions, %d profile samples; load generator %s)\n",
				us(e.ep.ServerCPUPerDecision), e.ep.CPU.Total.Round(time.Millisecond), l.Completed, e.ep.CPU.Samples, e.ep.CPU.Generator.Round(time.Millisecond))
			fmt.Fprintf(w, "    decision's own time under this load (%d decisions, histogram bucket bounds): p50 ≤ %s, p99 ≤ %s\n", e.ep.OverheadN, us(e.ep.OverheadP50), us(e.ep.OverheadP99))
		}
		fmt.Fprintf(w, "  decision's own time, in process, one at a time, warm tokens (%d decisions): p50 %s, p99 %s   target p99 ≤ %s: %s\n",
			dc.OwnN, us(dc.OwnP50), us(dc.OwnP99), us(DecideOwnP99Target), metText(dc.OwnMet))
	}
}
