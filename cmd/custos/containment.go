package main

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/gateway"
)

// newContainmentCmd is custos containment: the holds every gateway
// enforces, and an operator's hold placed by hand.
func newContainmentCmd() *cobra.Command {
	c := &cobra.Command{Use: "containment", Short: "Containment holds every gateway enforces: list, hold, release"}

	var lf adminFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List the holds in force (blocked networks and countries)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Holds []gateway.Hold `json:"holds"`
			}
			if err := lf.call("GET", gateway.ContainmentPath, nil, &out); err != nil {
				return err
			}
			if out.Holds == nil {
				out.Holds = []gateway.Hold{}
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tACTION\tTARGET\tUNTIL\tACTOR\tREASON")
			for _, h := range out.Holds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.Action, h.Target, h.Until.Format(time.RFC3339), h.Actor, h.Reason)
			}
			return tw.Flush()
		},
	}
	lf.add(list)

	var hf adminFlags
	var hfor, reason string
	hold := &cobra.Command{
		Use:   "hold block_source|block_country TARGET --for DURATION --reason R",
		Short: "Place a hold by hand on every gateway: a network (203.0.113.0/24) or a country (CN)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hfor == "" || reason == "" {
				return usageErr("--for and --reason are required")
			}
			var h gateway.Hold
			body := map[string]string{"action": args[0], "target": args[1], "for": hfor, "reason": reason}
			if err := hf.call("POST", gateway.ContainmentPath, body, &h); err != nil {
				return err
			}
			if hf.json {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hold %s: %s %s until %s\n", h.ID, h.Action, h.Target, h.Until.Format(time.RFC3339))
			return nil
		},
	}
	hf.add(hold)
	hold.Flags().StringVar(&hfor, "for", "", "how long, e.g. 1h (at most 168h)")
	hold.Flags().StringVar(&reason, "reason", "", "why (kept with the hold and in the audit log)")

	var rf adminFlags
	var rreason string
	release := &cobra.Command{
		Use:   "release ID --reason R",
		Short: "Lift a hold before its end on every gateway (a false alarm, a legitimate network or country held by mistake)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rreason == "" {
				return usageErr("--reason is required")
			}
			var r gateway.Release
			path := gateway.ContainmentPath + "/" + url.PathEscape(args[0]) + "?" + url.Values{"reason": {rreason}}.Encode()
			if err := rf.call("DELETE", path, nil, &r); err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s: %s %s (was held until %s)\n", r.ID, r.Action, r.Target, r.Until.Format(time.RFC3339))
			return nil
		},
	}
	rf.add(release)
	release.Flags().StringVar(&rreason, "reason", "", "why (kept in the audit log)")

	c.AddCommand(list, hold, release)
	return c
}
