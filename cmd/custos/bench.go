package main

import (
	"encoding/json"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/bench"
)

// newBenchCmd is custos bench: issuance, the gateway and the decision API
// measured on loopback next to their baselines.
func newBenchCmd() *cobra.Command {
	var (
		o          bench.Options
		asJSON     bool
		cpuProfile string
	)
	run := func(issuance, gateway, decide bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if o.Duration <= 0 {
				return usageErr("--duration must be positive")
			}
			if o.Concurrency < 0 {
				return usageErr("--concurrency must not be negative")
			}
			ctx, cancel := signalContext()
			defer cancel()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				o.CPUProfile = f
			}
			rep := bench.Report{Machine: bench.ThisMachine(), Duration: o.Duration.String()}
			if issuance {
				r, err := bench.RunIssuance(ctx, o)
				if err != nil {
					return err
				}
				rep.Issuance = &r
			}
			if gateway {
				r, err := bench.RunGateway(ctx, o)
				if err != nil {
					return err
				}
				rep.Gateway = &r
			}
			if decide {
				r, err := bench.RunDecide(ctx, o)
				if err != nil {
					return err
				}
				rep.Decide = &r
			}
			rep.LoadAfter = bench.ThisMachine().LoadAvg
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.WriteText(cmd.OutOrStdout())
			return nil
		}
	}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure issuance and the gateway end to end on loopback, next to their baselines",
	}
	cmd.PersistentFlags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measured phase")
	cmd.PersistentFlags().IntVar(&o.Concurrency, "concurrency", 0, "closed-loop workers (0: 256 for issuance, 64 for the gateway and the decision API)")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the main measured phase (server and load generator: issuance load, gateway peak) to this file")
	cmd.PersistentFlags().StringVar(&o.Client, "client", "lean", "issuance load generator's HTTP client: lean (prebuilt requests, minimal parser) or net/http")
	cmd.PersistentFlags().StringVar(&o.Redis, "redis", "", "put the issuance ledger on this Redis (redis://host:port/db, or a comma-separated list of shards) instead of the embedded SQLite")
	cmd.PersistentFlags().StringVar(&o.Dir, "tmp", "", "directory for the temporary data directories (default: the system's)")
	cmd.AddCommand(
		&cobra.Command{Use: "issuance", Short: "POST /v1/tokens against a full server, with the raw Ed25519 signing rate as ceiling", Args: cobra.NoArgs, RunE: run(true, false, false)},
		&cobra.Command{Use: "gateway", Short: "The in-process gateway against a bare reverse proxy to the sample shop, and the cold path", Args: cobra.NoArgs, RunE: run(false, true, false)},
		&cobra.Command{Use: "decide", Short: "The decision API: nginx alone against nginx with auth_request to custos, and GET /v1/decide and ext_authz gRPC alone", Args: cobra.NoArgs, RunE: run(false, false, true)},
		&cobra.Command{Use: "all", Short: "issuance, then gateway, then decide", Args: cobra.NoArgs, RunE: run(true, true, true)},
	)
	return cmd
}
