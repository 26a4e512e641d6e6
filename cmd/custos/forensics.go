package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/server"
)

// newScopeCmd is custos scope: whose data an incident exposed, from the
// access events on disk.
func newScopeCmd() *cobra.Command {
	var f adminFlags
	var indicators, measures []string
	var incident, outDir, org, contact, how, awareness string
	var allowPartial, quiet bool
	scope := &cobra.Command{
		Use:   "scope [--incident ID | --indicator kind:value …] --data DIR",
		Short: "Answer whose data an incident exposed, from the access events in DATA/events",
		Long: `Scope reads the access events in DATA/events and answers how many data subjects
an incident exposed, which data classes, when and from where.

Indicators are kind:value, repeatable:
  kid:KEYID  jti:TOKENID  reason:not_issued  request:REQUESTID
  ip:203.0.113.7  ip:203.0.113.0/24  asn:4134  country:CN
  route:/api/members/{id}/profile  subject:1000-2000  from:RFC3339  to:RFC3339

With --incident ID the incident is fetched from the running server (--server,
--token-file or --data for the admin credential); unless --indicator is given,
the indicators come from its alerts (keys, token ids, sources widened to /24),
and the legal deadline clocks run from its awareness time.

With --out DIR it writes notification.csv, notification.parquet, report.md and
report.json. An unreadable event file fails the scope unless --allow-partial,
which leaves it out and marks every output partial.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if incident == "" && len(indicators) == 0 {
				return usageErr("give --incident ID or at least one --indicator")
			}
			var ind forensics.Indicators
			var err error
			if len(indicators) > 0 {
				if ind, err = forensics.ParseIndicators(indicators); err != nil {
					return usageErr("%v", err)
				}
			}
			if f.data == "" {
				return usageErr("--data is required (the events are in DATA/events)")
			}
			meta := forensics.ReportMeta{Incident: "ad hoc scope", Organization: org, Contact: contact, How: how, Measures: measures}
			if meta.Measures == nil {
				meta.Measures = []string{}
			}
			now := time.Now()
			meta.Awareness = now
			if awareness != "" {
				if meta.Awareness, err = time.Parse(time.RFC3339, awareness); err != nil {
					return usageErr("--awareness: want an RFC 3339 time")
				}
			}
			if incident != "" {
				c, err := f.client()
				if err != nil {
					return err
				}
				ctx, cancel := ctxTimeout()
				v, err := fetchIncident(ctx, c, incident)
				cancel()
				if err != nil {
					return err
				}
				meta.Incident = v.Incident.ID
				if awareness == "" {
					meta.Awareness = v.Incident.Awareness
				}
				if len(indicators) == 0 {
					specs := server.IndicatorSpecs(v.Alerts)
					if len(specs) == 0 {
						return usageErr("incident %s names no key, token or source; give --indicator", incident)
					}
					if ind, err = forensics.ParseIndicators(specs); err != nil {
						return usageErr("indicators of incident %s: %v", incident, err)
					}
				}
			}
			st, err := forensics.OpenWith(filepath.Join(f.data, server.EventsDir), forensics.Options{AllowPartial: allowPartial})
			if err != nil {
				return err
			}
			defer st.Close()
			ctx, cancel := signalContext()
			defer cancel()
			bar, done := progress(cmd.ErrOrStderr(), "scanning events", quiet)
			var pr func(int, int)
			if bar != nil {
				pr = func(d, t int) { bar(uint64(d), uint64(t)) }
			}
			sc, err := st.Scope(ctx, ind, pr)
			done()
			if err != nil {
				if errors.Is(err, forensics.ErrBadFile) {
					return &exitError{2, fmt.Errorf("%w (use --allow-partial to leave it out)", err)}
				}
				if errors.Is(err, forensics.ErrBadIndicator) || errors.Is(err, forensics.ErrNoIndicators) {
					return &exitError{2, err}
				}
				return err
			}
			defer sc.Close()
			rep := sc.Report(meta, now)
			if outDir != "" {
				written, err := sc.WriteFiles(outDir, rep)
				if err != nil {
					return err
				}
				for _, p := range written {
					fmt.Fprintln(cmd.ErrOrStderr(), "wrote", p)
				}
			}
			if f.json {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			w := cmd.OutOrStdout()
			if err := sc.WriteSummary(w); err != nil {
				return err
			}
			if incident != "" {
				fmt.Fprintln(w)
				return forensics.WriteDeadlines(w, rep.Deadlines)
			}
			return nil
		},
	}
	f.add(scope)
	scope.Flags().Lookup("data").Usage = "data directory: events in DATA/events (and the admin credential for --incident)"
	scope.Flags().StringVar(&incident, "incident", "", "incident id on the running server: indicators from its alerts, clocks from its awareness")
	scope.Flags().StringArrayVar(&indicators, "indicator", nil, "kind:value; repeatable (see above)")
	scope.Flags().StringVar(&outDir, "out", "", "write notification.csv, notification.parquet, report.md, report.json here")
	scope.Flags().BoolVar(&allowPartial, "allow-partial", false, "leave unreadable event files out (outputs are marked partial) instead of failing")
	scope.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	scope.Flags().StringVar(&org, "organization", "", "report: the controller's name")
	scope.Flags().StringVar(&contact, "contact", "", "report: who the regulator and data subjects can contact")
	scope.Flags().StringVar(&how, "how", "", "report: the attack in words")
	scope.Flags().StringArrayVar(&measures, "measure", nil, "report: a measure taken; repeatable")
	scope.Flags().StringVar(&awareness, "awareness", "", "report: when the breach became known, RFC 3339 (default the incident's awareness, else now)")
	return scope
}

// newSQLCmd is custos sql: one read-only statement over the access events.
func newSQLCmd() *cobra.Command {
	var data string
	var asJSON bool
	sqlCmd := &cobra.Command{
		Use:   "sql 'SELECT … FROM events …' --data DIR",
		Short: "Run one read-only SQL statement over the access events in DATA/events",
		Long: fmt.Sprintf(`sql runs one read-only statement (DuckDB dialect) over the view events: every
sealed event file with the columns of the access event (token fields as
token_jti, token_kid, …) and the partition column hour. At most %d rows are
returned; add a LIMIT for more. Events in files the server has not sealed yet
(about a minute) are not seen; standard error says how many files and since
which hour.`, forensics.MaxSQLRows),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return usageErr("--data is required (the events are in DATA/events)")
			}
			st, err := forensics.Open(filepath.Join(data, server.EventsDir))
			if err != nil {
				return err
			}
			defer st.Close()
			ctx, cancel := signalContext()
			defer cancel()
			cols, rows, err := st.SQL(ctx, args[0])
			if err != nil {
				return &exitError{2, err}
			}
			if u, err := forensics.OpenParts(filepath.Join(data, server.EventsDir)); err == nil && u.Parts > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %d event file(s) not yet sealed (%d bytes, events from %s on, last written %s): not in this answer; they are sealed within a minute\n",
					u.Parts, u.Bytes, u.FirstHour.Format("2006-01-02T15:04Z"), u.LastWrite.UTC().Format(time.RFC3339))
			}
			if rows == nil {
				rows = [][]any{}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"columns": cols, "rows": forensics.SQLJSONRows(rows)})
			}
			if err := forensics.WriteSQLTable(cmd.OutOrStdout(), cols, rows); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "(%d rows)\n", len(rows))
			return nil
		},
	}
	sqlCmd.Flags().StringVar(&data, "data", os.Getenv("CUSTOS_DATA"), "data directory: events in DATA/events")
	sqlCmd.Flags().BoolVar(&asJSON, "json", false, `print {"columns": [...], "rows": [[...]]}`)
	return sqlCmd
}
