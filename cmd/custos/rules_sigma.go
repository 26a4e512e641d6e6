package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/detect/sigma"
)

// sigmaImport is `custos rules import sigma FILE...`.
func sigmaImport() *cobra.Command {
	var out string
	var partial bool
	imp := &cobra.Command{Use: "import", Short: "Convert rules written for other tools into custos rules"}
	cmd := &cobra.Command{
		Use:   "sigma FILE... [--out RULES_FILE] [--partial]",
		Short: "Convert Sigma rules for web logs (logsource webserver or proxy) into a custos rules file",
		Long: "Converts each Sigma rule (selections; modifiers contains, startswith, endswith, re, all;\n" +
			"conditions with and, or, not, 1 of, all of; count() by FIELD > N over the timeframe) into a\n" +
			"CEL rule and prints the rules file, checked by the rule compiler. A rule custos cannot\n" +
			"express is refused with the reason; with --partial the others are still written.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rules []detect.Rule
			refused := 0
			for _, name := range args {
				b, err := os.ReadFile(name)
				if err != nil {
					return usageErr("%v", err)
				}
				r, err := sigma.Convert(b)
				if err != nil {
					refused++
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", name, err)
					continue
				}
				rules = append(rules, r)
			}
			if refused > 0 && !partial {
				return usageErr("%d of %d rules refused; nothing written (--partial writes the others)", refused, len(args))
			}
			if len(rules) == 0 {
				return usageErr("no rule converted")
			}
			file, err := sigma.File(rules)
			if err != nil {
				return err
			}
			if _, err := detect.CheckRules("sigma", bytes.NewReader(file)); err != nil {
				return &exitError{2, err}
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(file)
				return err
			}
			if err := os.WriteFile(out, file, 0o644); err != nil {
				return usageErr("%v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d rules written to %s (%d refused)\n", len(rules), out, refused)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the rules file here instead of standard output")
	cmd.Flags().BoolVar(&partial, "partial", false, "write the rules that convert even if others are refused")
	imp.AddCommand(cmd)
	return imp
}
