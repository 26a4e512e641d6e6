package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/sim"
	"github.com/custos-dev/custos/sim/scenario"
)

// progress draws a bar on w (standard error), or nothing when quiet.
func progress(w io.Writer, what string, quiet bool) (func(done, total uint64), func()) {
	if quiet {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(done, total uint64) {
			if bar == nil {
				bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
					progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(30),
					progressbar.OptionShowIts(), progressbar.OptionSetItsString("req"))
			}
			bar.Set64(int64(done))
		}, func() {
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(w)
			}
		}
}

// simFlags are the simulate coupang command's flags.
type simFlags struct {
	scale                            float64
	seed, normalPerDay               uint64
	mode, scopeDir, cpuProfile       string
	worlds, attackers                []string
	asJSON, quiet, noScope, domestic bool
	attackRate                       float64
	distSources, slowSources         int
	perSource, replayed              uint64
	slowEvery                        time.Duration
}

// newSimulateCmd is custos simulate coupang: the replay of the breach.
func newSimulateCmd() *cobra.Command {
	var f simFlags
	def := scenario.DefaultConfig()
	simulate := &cobra.Command{Use: "simulate", Short: "Replay a breach against custos and a signature-only baseline"}
	coupang := &cobra.Command{
		Use:   "coupang",
		Short: "Replay the 2025 Coupang breach (defaults from the investigation's figures)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := scenario.DefaultConfig()
			cfg.Scale, cfg.Seed = f.scale, f.seed
			if f.normalPerDay > 0 {
				cfg.NormalPerDay = f.normalPerDay
			}
			cfg.AttackRate, cfg.DistributedSources, cfg.MembersPerSource = f.attackRate, f.distSources, f.perSource
			cfg.SlowSources, cfg.SlowEvery, cfg.ReplayedTokens = f.slowSources, f.slowEvery, f.replayed
			cfg.AttackDomestic = f.domestic
			variants, err := scenario.ParseVariants(f.attackers)
			if err != nil {
				return usageErr("--attacker: %v", err)
			}
			for _, v := range variants {
				c := cfg
				c.Attacker = v
				if err := c.Validate(); err != nil {
					return usageErr("%v", err)
				}
			}
			if f.mode != "events" && f.mode != "http" {
				return usageErr("--mode must be events or http, not %q", f.mode)
			}
			switch {
			case cmd.Flags().Changed("worlds"):
			case f.mode == "http":
				f.worlds = defaultHTTPWorlds // each world is a replay of its own
			case f.scale > 0.01:
				f.worlds = []string{"custos"} // the variants cost a full replay each
			}
			worlds, err := sim.WorldsNamed(f.worlds)
			if err != nil {
				return usageErr("--worlds: %v", err)
			}
			var httpWorlds []sim.HTTPOptions
			if f.mode == "http" {
				all := slices.Contains(f.worlds, "all")
				for _, w := range worlds {
					if all && w.DPoP {
						continue // events mode only
					}
					o, err := sim.HTTPWorld(w)
					if err != nil {
						return usageErr("--worlds: %v", err)
					}
					httpWorlds = append(httpWorlds, o)
				}
			}
			matrix := cmd.Flags().Changed("attacker")
			ctx, cancel := signalContext()
			defer cancel()
			if f.cpuProfile != "" {
				pf, err := os.Create(f.cpuProfile)
				if err != nil {
					return err
				}
				defer pf.Close()
				if err := pprof.StartCPUProfile(pf); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			var reps []sim.Report
			for _, v := range variants {
				c := cfg
				c.Attacker = v
				bar, done := progress(cmd.ErrOrStderr(), f.mode+" replay "+string(v), f.quiet)
				var rep sim.Report
				if f.mode == "http" {
					rep, err = replayHTTP(ctx, c, httpWorlds, bar)
				} else {
					rep, err = replayEvents(ctx, c, worlds, f, bar)
				}
				done()
				if err != nil {
					return err
				}
				reps = append(reps, rep)
			}
			out := cmd.OutOrStdout()
			if !matrix {
				if f.asJSON {
					return reps[0].WriteJSON(out)
				}
				return reps[0].WriteMarkdown(out)
			}
			m := sim.NewMatrix(reps...)
			if f.asJSON {
				return m.WriteJSON(out)
			}
			return m.WriteMarkdown(out)
		},
	}
	fl := coupang.Flags()
	fl.Float64Var(&f.scale, "scale", 0.001, "fraction of the real breach's size (1 = 33.7 million members)")
	fl.Uint64Var(&f.seed, "seed", def.Seed, "seed; the same seed gives the same replay")
	fl.Uint64Var(&f.normalPerDay, "normal-per-day", 0, "normal page views per simulated day at scale 1 (default 100,000); raise it to measure false alarms over more normal traffic")
	fl.StringVar(&f.mode, "mode", "events", "events (straight into detection and forensics) or http (through the real authority and gateway)")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON instead of a Markdown table")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fl.BoolVar(&f.noScope, "no-scope", false, "events mode: do not write events for scoping (faster at large scale; no time-to-scope figure)")
	fl.StringSliceVar(&f.worlds, "worlds", []string{"all"}, "custos worlds to replay: custos, copied, observe, nolifecycle, dpop or all (events mode: default all up to --scale 0.01, custos above; http mode: custos, copied and observe by default, each a replay of its own, all adds nolifecycle; dpop is events-mode only)")
	fl.StringVar(&f.scopeDir, "scope-dir", "", "events mode: where worlds write their access events (default a temp dir, removed at the end)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the replay to this file")
	fl.StringSliceVar(&f.attackers, "attacker", []string{string(scenario.StolenKey)}, "attacker variants, each replayed against the baseline and every world and printed as a detection matrix: stolen-key, stolen-client-secret, distributed, low-and-slow, replayed-tokens or all")
	fl.Float64Var(&f.attackRate, "attack-rate", def.AttackRate, "stolen-client-secret, distributed, replayed-tokens: attacker requests per second")
	fl.IntVar(&f.distSources, "distributed-sources", def.DistributedSources, "distributed: domestic sources (own /24, ASN and user agent each)")
	fl.Uint64Var(&f.perSource, "members-per-source", def.MembersPerSource, "distributed: members read from one source before the next takes over")
	fl.IntVar(&f.slowSources, "slow-sources", def.SlowSources, "low-and-slow: sources taking turns")
	fl.DurationVar(&f.slowEvery, "slow-every", def.SlowEvery, "low-and-slow: time between two requests of one source")
	fl.BoolVar(&f.domestic, "attack-domestic", false, "stolen-client-secret, replayed-tokens: send from domestic sources (as many as the crawler's networks) instead of abroad")
	fl.Uint64Var(&f.replayed, "replayed-tokens", def.ReplayedTokens, "replayed-tokens: customer tokens replayed, at scale 1")
	simulate.AddCommand(coupang)
	return simulate
}

// replayEvents runs one events-mode replay of cfg.
func replayEvents(ctx context.Context, cfg scenario.Config, worlds []sim.CustosOptions, f simFlags, bar func(done, total uint64)) (sim.Report, error) {
	o := sim.EventsOptions{Scenario: cfg, Worlds: worlds}
	if !f.noScope {
		dir := f.scopeDir
		if dir == "" {
			d, err := os.MkdirTemp("", "custos-scope-")
			if err != nil {
				return sim.Report{}, err
			}
			defer os.RemoveAll(d)
			dir = d
		} else {
			dir = filepath.Join(dir, string(cfg.AttackerVariant()))
		}
		o.ScopeDir = dir
	}
	return sim.RunEvents(ctx, o, bar)
}

// defaultHTTPWorlds are the worlds http mode replays unless --worlds says.
var defaultHTTPWorlds = []string{"custos", "copied", "observe"}

// replayHTTP runs the HTTP-mode replay once per world, each with a server,
// ledger and state of its own; the first also runs the baseline.
func replayHTTP(ctx context.Context, cfg scenario.Config, worlds []sim.HTTPOptions, bar func(done, total uint64)) (sim.Report, error) {
	var rep sim.Report
	for i, o := range worlds {
		o.Scenario, o.NoBaseline = cfg, i > 0
		r, err := replayHTTPWorld(ctx, o, bar)
		if err != nil {
			return sim.Report{}, err
		}
		if i == 0 {
			rep = r
		} else {
			rep.Worlds = append(rep.Worlds, r.Worlds...)
		}
	}
	return rep, nil
}

func replayHTTPWorld(ctx context.Context, o sim.HTTPOptions, bar func(done, total uint64)) (sim.Report, error) {
	h, err := sim.StartHTTP(ctx, o)
	if err != nil {
		return sim.Report{}, err
	}
	defer h.Close()
	return h.Run(ctx, bar)
}
