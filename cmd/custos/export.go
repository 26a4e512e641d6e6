package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/detect/sink"
)

// newExportCmd is custos export: access events and alerts as OCSF or custos JSON.
func newExportCmd() *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "export [FILE...] --format ocsf|native",
		Short: "Convert access events and alerts (JSON lines) to OCSF or custos JSON",
		Long: "Reads JSON lines of access events (an events file) and alerts (an alerts file), from the\n" +
			"files named or standard input, and writes each as OCSF 1.3 (HTTP Activity, class 4002;\n" +
			"Detection Finding, class 2004) or as custos JSON, one per line.",
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := sink.ParseFormat(format)
			if err != nil {
				return usageErr("--format: %v", err)
			}
			w := cmd.OutOrStdout()
			if out != "" {
				fo, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
				if err != nil {
					return usageErr("--out: %v", err)
				}
				defer fo.Close()
				w = fo
			}
			if len(args) == 0 {
				args = []string{"-"}
			}
			for _, name := range args {
				var r io.Reader = cmd.InOrStdin()
				if name != "-" {
					fi, err := os.Open(name)
					if err != nil {
						return usageErr("%v", err)
					}
					defer fi.Close()
					r = fi
				}
				if _, err := sink.Export(r, w, f); err != nil {
					return usageErr("%s: %v", name, err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "ocsf", "ocsf or native")
	cmd.Flags().StringVar(&out, "out", "", "write to this new file (mode 0600) instead of standard output")
	return cmd
}
