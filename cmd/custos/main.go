// Command custos is the token authority and customer-data access sentinel.
// It only parses flags and wires the parts together; the logic lives in the
// packages named for their job.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// exitError carries an exit status: 1 for a finding, 2 for bad usage or input.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(format string, a ...any) error {
	return &exitError{2, fmt.Errorf(format, a...)}
}

// newRootCmd assembles the command tree. Each call builds a fresh tree with
// every flag at its default.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "custos",
		Short:         "Token authority and customer-data access sentinel",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	logFormatFlag = "text"
	root.PersistentFlags().Var(&logFormatFlag, "log-format", "log format of long-running commands: text or json (one object a line)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &exitError{2, err} })
	root.AddCommand(
		newServeCmd(),
		newGatewayCmd(),
		newClientsCmd(),
		newKeysCmd(),
		newCredentialsCmd(),
		newSCIMCmd(),
		newIncidentsCmd(),
		newContainmentCmd(),
		newScopeCmd(),
		newSQLCmd(),
		newExportCmd(),
		newIngestCmd(),
		newRulesCmd(),
		newAuditCmd(),
		newSimulateCmd(),
		newDemoCmd(),
		newBenchCmd(),
		newVersionCmd(),
	)
	return root
}

func main() { os.Exit(run(os.Args[1:])) }

// run executes the command line args and returns the exit status: 0, 1 for
// a finding, 2 for bad usage or input.
func run(args []string) int {
	// The audit log's storage library logs through klog; keep its chatter
	// (INFO) off the terminal and let warnings and errors through.
	klog.LogToStderr(false)
	klog.SetOutputBySeverity("INFO", io.Discard)
	klog.SetOutputBySeverity("WARNING", os.Stderr)
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "custos:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 2
}
