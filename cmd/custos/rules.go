package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/detect"
)

func init() {
	rules := &cobra.Command{Use: "rules", Short: "Work with custom detection rules (CEL)"}
	var events string
	var asJSON bool
	test := &cobra.Command{
		Use:   "test FILE --events FILE",
		Short: "Validate a rules file and run it over JSON lines of access events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rf, err := os.Open(args[0])
			if err != nil {
				return usageErr("failed to open rules: %v", err)
			}
			defer rf.Close()
			if events == "" {
				if _, err := detect.CheckRules(args[0], rf); err != nil {
					return &exitError{2, err}
				}
				fmt.Fprintln(cmd.OutOrStdout(), "rules ok")
				return nil
			}
			ef, err := os.Open(events)
			if err != nil {
				return usageErr("failed to open events: %v", err)
			}
			defer ef.Close()
			rep, err := detect.TestRules(rf, ef)
			if errors.Is(err, detect.ErrInvalidRules) || err != nil {
				return &exitError{2, err}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Fprintf(out, "%d events, %d malformed lines\n", rep.Events, len(rep.Malformed))
			for _, m := range rep.Malformed {
				fmt.Fprintf(out, "  line %d: %s\n", m.Line, m.Err)
			}
			for _, r := range rep.Rules {
				fmt.Fprintf(out, "%-32s %8d matches %4d alerts\n", r.Name, r.Matches, r.Alerts)
			}
			return nil
		},
	}
	test.Flags().StringVar(&events, "events", "", "JSON lines of access events")
	test.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	rules.AddCommand(test, sigmaImport())
	root.AddCommand(rules)
}
