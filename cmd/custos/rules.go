package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/detect"
)

// newRulesCmd is custos rules test: custom rules checked and run over events.
func newRulesCmd() *cobra.Command {
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
			return rep.WriteText(out)
		},
	}
	test.Flags().StringVar(&events, "events", "", "JSON lines of access events")
	test.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	rules.AddCommand(test, sigmaImport())
	return rules
}
