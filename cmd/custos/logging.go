package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// logFormat is the --log-format flag of every command: how the long-running
// ones (serve, gateway, the roles, audit witness) write their log.
type logFormat string

func (f *logFormat) String() string { return string(*f) }
func (f *logFormat) Type() string   { return "text|json" }
func (f *logFormat) Set(v string) error {
	switch v {
	case "text", "json":
		*f = logFormat(v)
		return nil
	}
	return fmt.Errorf("log format %q: want text or json", v)
}

var logFormatFlag = logFormat("text")

// newLogger is the log of a long-running command, on standard error.
func newLogger() *slog.Logger { return newLoggerTo(os.Stderr) }

func newLoggerTo(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if logFormatFlag == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
