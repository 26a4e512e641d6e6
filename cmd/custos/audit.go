package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/event"
)

// auditFlags are shared by the audit subcommands.
type auditFlags struct {
	data, dir, url, vkey string
	json                 bool
}

func (f *auditFlags) add(cmd *cobra.Command, remote bool) {
	cmd.Flags().StringVar(&f.data, "data", os.Getenv("CUSTOS_DATA"), "data directory (the log is DATA/audit)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "log directory (default DATA/audit)")
	if remote {
		cmd.Flags().StringVar(&f.url, "url", "", "base URL the log is served under, e.g. https://host/audit/")
	}
	cmd.Flags().StringVar(&f.vkey, "vkey", "", "checkpoint verifier key file (default LOGDIR/vkey)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
}

func (f *auditFlags) logDir() (string, error) {
	switch {
	case f.dir != "":
		return f.dir, nil
	case f.data != "":
		return filepath.Join(f.data, "audit"), nil
	}
	return "", usageErr("need --dir or --data (or CUSTOS_DATA)")
}

// location is the log directory or, with --url, the URL.
func (f *auditFlags) location() (string, error) {
	if f.url != "" {
		return f.url, nil
	}
	return f.logDir()
}

func (f *auditFlags) verifier() (note.Verifier, error) {
	p := f.vkey
	if p == "" {
		d, err := f.logDir()
		if err != nil {
			return nil, usageErr("need --vkey (or --dir/--data holding vkey)")
		}
		p = filepath.Join(d, "vkey")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, usageErr("failed to read verifier key: %v", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, usageErr("bad verifier key %s: %v", p, err)
	}
	return v, nil
}

// finding maps an audit error to exit status 1 (the log is bad) or 2.
func finding(err error) error {
	for _, e := range []error{audit.ErrTampered, audit.ErrBadBundle, audit.ErrBadTile, audit.ErrBadCheckpoint,
		audit.ErrUnknownVersion, audit.ErrBadEntry, audit.ErrRollback, audit.ErrFork} {
		if errors.Is(err, e) {
			return &exitError{1, err}
		}
	}
	return &exitError{2, err}
}

// newAuditCmd is custos audit: check, prove, watch and export the audit log.
func newAuditCmd() *cobra.Command {
	auditCmd := &cobra.Command{Use: "audit", Short: "Check, prove, watch and export the tamper-evident audit log"}

	var vf auditFlags
	var since string
	var showProgress bool
	verify := &cobra.Command{
		Use:   "verify [--dir DIR | --url URL] [--since CHECKPOINT_FILE]",
		Short: "Recompute the log from its tiles and check its signed checkpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loc, err := vf.location()
			if err != nil {
				return err
			}
			v, err := vf.verifier()
			if err != nil {
				return err
			}
			var old []byte
			if since != "" {
				if old, err = os.ReadFile(since); err != nil {
					return usageErr("failed to read --since checkpoint: %v", err)
				}
			}
			start := time.Now()
			var report func(done, total uint64)
			if wantProgress(cmd.ErrOrStderr(), showProgress, vf.json) {
				var finish func()
				report, finish = progress(cmd.ErrOrStderr(), "verify", false)
				defer finish()
			}
			res, err := audit.VerifyProgress(cmdCtx(cmd), loc, v, old, report)
			if err != nil {
				var te *audit.TamperError
				if errors.As(err, &te) && vf.json {
					printJSON(cmd.OutOrStdout(), map[string]any{"ok": false, "index": te.Index, "file": te.File, "error": err.Error()})
				}
				return finding(err)
			}
			if vf.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"ok": true, "origin": res.Origin, "size": res.Size, "root": fmt.Sprintf("%x", res.Root), "kinds": res.Kinds})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %s, %d entries, root %x, verified in %v\n", res.Origin, res.Size, res.Root, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	vf.add(verify, true)
	verify.Flags().StringVar(&since, "since", "", "an earlier checkpoint the log must be consistent with")
	verify.Flags().BoolVar(&showProgress, "progress", false, "draw a progress bar (entry bundles) on standard error (default: when it is a terminal and not --json)")

	var pf auditFlags
	var index int64
	var eventFile string
	prove := &cobra.Command{
		Use:   "prove --index N | --event FILE",
		Short: "Print an inclusion proof for an entry, or for one access event via its digest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (index >= 0) == (eventFile != "") {
				return usageErr("need exactly one of --index and --event")
			}
			v, err := pf.verifier()
			if err != nil {
				return err
			}
			if index >= 0 {
				loc, err := pf.location()
				if err != nil {
					return err
				}
				p, err := audit.ProveEntry(cmdCtx(cmd), loc, v, uint64(index))
				if err != nil {
					if errors.Is(err, audit.ErrNotPublished) {
						return &exitError{1, err}
					}
					return finding(err)
				}
				return printJSON(cmd.OutOrStdout(), p)
			}
			b, err := os.ReadFile(eventFile)
			if err != nil {
				return usageErr("failed to read event: %v", err)
			}
			var ev event.Access
			if err := json.Unmarshal(b, &ev); err != nil {
				return usageErr("failed to parse access event %s: %v", eventFile, err)
			}
			dir, err := pf.logDir()
			if err != nil {
				return err
			}
			p, err := audit.ProveAccess(cmdCtx(cmd), dir, v, ev)
			if err != nil {
				if errors.Is(err, audit.ErrNotFound) {
					return &exitError{1, err}
				}
				return finding(err)
			}
			return printJSON(cmd.OutOrStdout(), p)
		},
	}
	pf.add(prove, true)
	prove.Flags().Int64Var(&index, "index", -1, "entry index")
	prove.Flags().StringVar(&eventFile, "event", "", "access event JSON file")

	var wf auditFlags
	var state string
	var once bool
	var every time.Duration
	var metricsListen string
	witness := &cobra.Command{
		Use:   "witness URL --state FILE [--once]",
		Short: "Watch a published checkpoint; exit 1 on a rollback or fork",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if state == "" {
				return usageErr("--state is required")
			}
			v, err := wf.verifier()
			if err != nil {
				return err
			}
			url := args[0]
			if !strings.HasSuffix(url, "checkpoint") {
				url = strings.TrimSuffix(url, "/") + "/checkpoint"
			}
			w := &audit.Witness{URL: url, Verifier: v, StateFile: state}
			if metricsListen != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				w.OnCheck = audit.WitnessMetrics(reg, time.Now)
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return usageErr("--metrics-listen: %v", err)
				}
				defer ln.Close()
				go http.Serve(ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			}
			if !once {
				log := newLogger()
				w.OnAlarm = func(err error) { log.Error("audit log alarm", "checkpoint", url, "err", err) }
			}
			if once {
				cp, err := w.Check(cmdCtx(cmd))
				if err != nil {
					if errors.Is(err, audit.ErrRollback) || errors.Is(err, audit.ErrFork) || errors.Is(err, audit.ErrBadCheckpoint) {
						return &exitError{1, err}
					}
					return &exitError{2, err}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok: %s, %d entries\n", cp.Origin, cp.Size)
				return nil
			}
			ctx, stop := signal.NotifyContext(cmdCtx(cmd), os.Interrupt)
			defer stop()
			if err := w.Run(ctx, every); err != nil && !errors.Is(err, context.Canceled) {
				return &exitError{1, err}
			}
			return nil
		},
	}
	wf.add(witness, false)
	witness.Flags().StringVar(&state, "state", "", "file keeping the last accepted checkpoint")
	witness.Flags().BoolVar(&once, "once", false, "check once and exit")
	witness.Flags().DurationVar(&every, "every", 10*time.Second, "poll interval")
	witness.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve the witness's status as Prometheus metrics on this address (/metrics)")

	var ef auditFlags
	var out string
	export := &cobra.Command{
		Use:   "export --out DIR",
		Short: "Copy the log, its checkpoints and how to check them into a new directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErr("--out is required")
			}
			dir, err := ef.logDir()
			if err != nil {
				return err
			}
			if err := audit.Export(cmdCtx(cmd), dir, out); err != nil {
				return finding(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported to %s\n", out)
			return nil
		},
	}
	ef.add(export, false)
	export.Flags().StringVar(&out, "out", "", "export directory (must not exist)")

	auditCmd.AddCommand(verify, prove, witness, export)
	return auditCmd
}

func cmdCtx(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
