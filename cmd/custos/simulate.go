package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
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

func init() {
	var scale float64
	var seed, normalPerDay uint64
	var mode, scopeDir, cpuProfile string
	var worlds []string
	var asJSON, quiet, noScope bool
	simulate := &cobra.Command{Use: "simulate", Short: "Replay a breach against custos and a signature-only baseline"}
	coupang := &cobra.Command{
		Use:   "coupang",
		Short: "Replay the 2025 Coupang breach (defaults from the investigation's figures)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := scenario.DefaultConfig()
			cfg.Scale, cfg.Seed = scale, seed
			if normalPerDay > 0 {
				cfg.NormalPerDay = normalPerDay
			}
			if err := cfg.Validate(); err != nil {
				return usageErr("%v", err)
			}
			ctx, cancel := signalContext()
			defer cancel()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			bar, done := progress(cmd.ErrOrStderr(), mode+" replay", quiet)
			var rep sim.Report
			var err error
			switch mode {
			case "events":
				o := sim.EventsOptions{Scenario: cfg}
				if !cmd.Flags().Changed("worlds") && scale > 0.01 {
					worlds = []string{"custos"} // the variants cost a full replay each
				}
				if o.Worlds, err = sim.WorldsNamed(worlds); err != nil {
					return usageErr("--worlds: %v", err)
				}
				if !noScope {
					if scopeDir == "" {
						if scopeDir, err = os.MkdirTemp("", "custos-scope-"); err != nil {
							return err
						}
						defer os.RemoveAll(scopeDir)
					}
					o.ScopeDir = scopeDir
				}
				rep, err = sim.RunEvents(ctx, o, bar)
			case "http":
				rep, err = replayHTTP(ctx, cfg, bar, nil)
			default:
				return usageErr("--mode must be events or http, not %q", mode)
			}
			done()
			if err != nil {
				return err
			}
			if asJSON {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteMarkdown(cmd.OutOrStdout())
		},
	}
	coupang.Flags().Float64Var(&scale, "scale", 0.001, "fraction of the real breach's size (1 = 33.7 million members)")
	coupang.Flags().Uint64Var(&seed, "seed", scenario.DefaultConfig().Seed, "seed; the same seed gives the same replay")
	coupang.Flags().Uint64Var(&normalPerDay, "normal-per-day", 0, "normal page views per simulated day at scale 1 (default 100,000); raise it to measure false alarms over more normal traffic")
	coupang.Flags().StringVar(&mode, "mode", "events", "events (straight into detection and forensics) or http (through the real authority and gateway)")
	coupang.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a Markdown table")
	coupang.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	coupang.Flags().BoolVar(&noScope, "no-scope", false, "events mode: do not write events for scoping (faster at large scale; no time-to-scope figure)")
	coupang.Flags().StringSliceVar(&worlds, "worlds", []string{"all"}, "events mode: custos worlds to replay: custos, copied, observe, nolifecycle or all (default all up to --scale 0.01, custos above)")
	coupang.Flags().StringVar(&scopeDir, "scope-dir", "", "events mode: where worlds write their access events (default a temp dir, removed at the end)")
	coupang.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the replay to this file")
	simulate.AddCommand(coupang)
	root.AddCommand(simulate)
}

// replayHTTP runs the HTTP-mode replay; with keep set it leaves the servers
// running and hands them to keep before returning.
func replayHTTP(ctx context.Context, cfg scenario.Config, bar func(done, total uint64), keep func(*sim.HTTPReplay) error) (sim.Report, error) {
	h, err := sim.StartHTTP(ctx, sim.HTTPOptions{Scenario: cfg})
	if err != nil {
		return sim.Report{}, err
	}
	defer h.Close()
	rep, err := h.Run(ctx, bar)
	if err != nil || keep == nil {
		return rep, err
	}
	return rep, keep(h)
}
