package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/sim"
	"github.com/custos-dev/custos/sim/scenario"
)

// demoWorld is one replay the demo shows.
type demoWorld struct {
	title     string
	attacker  scenario.Variant
	keyCopied bool
}

// demoWorlds: the departure kills the copied key (refusals revoked_key);
// the key copied anyway, live, where provenance alone refuses it
// (not_issued); and an attacker who adapts: real tokens from the login
// service's stolen client secret, seen by issuance detection.
var demoWorlds = []demoWorld{
	{"1. offboarded: the departure revoked the key he copied (refusals: revoked_key)", scenario.StolenKey, false},
	{"2. key copied anyway: the key is live, only provenance stands (refusals: not_issued)", scenario.StolenKey, true},
	{"3. an attacker who adapts: the login service's client secret stolen, real tokens (issuance detection)", scenario.StolenClientSecret, false},
}

// newDemoCmd is custos demo: the replays through live servers, which keep
// serving.
func newDemoCmd() *cobra.Command {
	var exit bool
	var scale float64
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start custos with a sample shop, replay the Coupang breach and an adapting attacker through it over HTTP, and keep serving",
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
			var running []*sim.HTTPReplay
			defer func() {
				for _, h := range running {
					h.Close()
				}
			}()
			for _, w := range demoWorlds {
				c := cfg
				c.Attacker = w.attacker
				h, err := sim.StartHTTP(ctx, sim.HTTPOptions{Scenario: c, KeyCopied: w.keyCopied})
				if err != nil {
					return err
				}
				running = append(running, h)
				bar, done := progress(errw, "replay "+strings.SplitN(w.title, ":", 2)[0], false)
				_, err = h.Run(ctx, bar)
				done()
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\n## %s\n\n", w.title)
				if err := h.Report(out); err != nil {
					return err
				}
				writeIncidents(out, h)
			}
			if exit {
				return nil
			}
			fmt.Fprintln(errw, "serving; Ctrl-C stops")
			running[0].Wait(ctx)
			return nil
		},
	}
	cmd.Flags().BoolVar(&exit, "exit", false, "stop after printing the reports instead of serving")
	cmd.Flags().Float64Var(&scale, "scale", 0.0001, "fraction of the real breach's size")
	return cmd
}

// writeIncidents prints the incidents detection opened in h's custos, each
// with its console page, and where h serves.
func writeIncidents(out io.Writer, h *sim.HTTPReplay) {
	incs := h.Server.Detect.Incidents()
	fmt.Fprintf(out, "\nIncidents in the console (%d):\n", len(incs))
	for _, inc := range incs {
		fmt.Fprintf(out, "- %s/console/incidents/%s  %s: %s\n", h.APIURL, inc.ID, inc.Severity, strings.Join(inc.Rules, ", "))
	}
	fmt.Fprintf(out, "\ncustos API:      %s  (admin credential: %s)\n", h.APIURL, filepath.Join(h.Server.Config.Data, server.AdminTokenFile))
	fmt.Fprintf(out, "custos gateway:  %s  (in front of the sample shop at %s)\n", h.GatewayURL, h.ShopURL)
	fmt.Fprintf(out, "alerts:          %s/v1/alerts   audit checkpoint: %s/audit/checkpoint\n", h.APIURL, h.APIURL)
	fmt.Fprintf(out, "console:         %s/console\n", h.APIURL)
}
