package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/forensics"
)

// buildInfo is what `custos version` prints.
type buildInfo struct {
	Module    string            `json:"module"`
	Version   string            `json:"version"`
	Commit    string            `json:"commit,omitempty"`
	Time      string            `json:"commit_time,omitempty"`
	Modified  bool              `json:"modified,omitempty"`
	GoVersion string            `json:"go_version"`
	Platform  string            `json:"platform"`
	DuckDB    bool              `json:"duckdb"`
	Settings  map[string]string `json:"build_settings,omitempty"`
}

// readBuildInfo collects the version from what the Go toolchain embedded.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: "(unknown)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, DuckDB: forensics.HasDuckDB}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	bi.Module = info.Main.Path
	if info.Main.Version != "" {
		bi.Version = info.Main.Version
	}
	bi.GoVersion = info.GoVersion
	bi.Settings = map[string]string{}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Commit = s.Value
		case "vcs.time":
			bi.Time = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		case "vcs":
		default:
			bi.Settings[s.Key] = s.Value
		}
	}
	return bi
}

// newVersionCmd is custos version.
func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and build flags of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := readBuildInfo()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(bi)
			}
			commit := bi.Commit
			if commit == "" {
				commit = "(not recorded)"
			} else if bi.Modified {
				commit += " (modified)"
			}
			fmt.Fprintf(out, "custos %s\n", bi.Version)
			fmt.Fprintf(out, "commit     %s\n", commit)
			fmt.Fprintf(out, "go         %s %s\n", bi.GoVersion, bi.Platform)
			fmt.Fprintf(out, "duckdb     %t\n", bi.DuckDB)
			var flags []string
			for _, k := range []string{"-tags", "-trimpath", "-ldflags", "CGO_ENABLED", "-buildmode"} {
				if v, ok := bi.Settings[k]; ok {
					flags = append(flags, k+"="+v)
				}
			}
			fmt.Fprintf(out, "build      %s\n", strings.Join(flags, " "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
