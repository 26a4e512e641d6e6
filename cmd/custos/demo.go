package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/sim"
	"github.com/custos-dev/custos/sim/scenario"
)

// newDemoCmd is custos demo: the replay through a live server, which keeps
// serving.
func newDemoCmd() *cobra.Command {
	var exit bool
	var scale float64
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start custos with a sample shop, replay the Coupang breach through it over HTTP, and keep serving",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := scenario.DefaultConfig()
			cfg.Scale = scale
			if err := cfg.Validate(); err != nil {
				return usageErr("%v", err)
			}
			ctx, cancel := signalContext()
			defer cancel()
			out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			fmt.Fprintf(errw, "custos demo: the 2025 Coupang breach at scale %g, through a signature-only gateway and through custos, over loopback HTTP\n", scale)
			bar, done := progress(errw, "replay", false)
			rep, err := replayHTTP(ctx, cfg, bar, func(h *sim.HTTPReplay) error {
				done()
				if err := h.Report(out); err != nil {
					return err
				}
				fmt.Fprintf(out, "\ncustos API:      %s  (admin credential: %s)\n", h.APIURL, filepath.Join(h.Server.Config.Data, server.AdminTokenFile))
				fmt.Fprintf(out, "custos gateway:  %s  (in front of the sample shop at %s)\n", h.GatewayURL, h.ShopURL)
				fmt.Fprintf(out, "alerts:          %s/v1/alerts   audit checkpoint: %s/audit/checkpoint\n", h.APIURL, h.APIURL)
				fmt.Fprintf(out, "console:         %s/console\n", h.APIURL)
				if exit {
					return nil
				}
				fmt.Fprintln(errw, "serving; Ctrl-C stops")
				h.Wait(ctx)
				return nil
			})
			done()
			_ = rep
			return err
		},
	}
	cmd.Flags().BoolVar(&exit, "exit", false, "stop after printing the report instead of serving")
	cmd.Flags().Float64Var(&scale, "scale", 0.0001, "fraction of the real breach's size")
	return cmd
}
