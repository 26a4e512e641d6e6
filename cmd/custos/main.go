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

var root = &cobra.Command{
	Use:           "custos",
	Short:         "Token authority and customer-data access sentinel",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	// The audit log's storage library logs through klog; keep its chatter
	// (INFO) off the terminal and let warnings and errors through.
	klog.LogToStderr(false)
	klog.SetOutputBySeverity("INFO", io.Discard)
	klog.SetOutputBySeverity("WARNING", os.Stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &exitError{2, err} })
	err := root.Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "custos:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(2)
}
