package detect

// Text output for a terminal: incidents and their alerts as tables, and the
// outcome of TestRules.

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// stamp is a time for a table: RFC 3339 UTC, or "-" when unset.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// WriteIncidents prints incidents as a table, one a line.
func WriteIncidents(w io.Writer, incs []Incident) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAWARENESS\tSEVERITY\tALERTS\tRULES\tENTITIES")
	for _, inc := range incs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", inc.ID, stamp(inc.Awareness), inc.Severity, len(inc.Alerts),
			strings.Join(inc.Rules, ","), strings.Join(inc.Entities, ","))
	}
	return tw.Flush()
}

// WriteIncident prints one incident's fields, then its alerts as a table.
func WriteIncident(w io.Writer, inc Incident, alerts []Alert) error {
	fmt.Fprintf(w, "incident   %s\nseverity   %s\nawareness  %s\nlast seen  %s\nrules      %s\nentities   %s\n\n",
		inc.ID, inc.Severity, stamp(inc.Awareness), stamp(inc.LastSeen), strings.Join(inc.Rules, ", "), strings.Join(inc.Entities, ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALERT\tRULE\tSEVERITY\tENTITY\tCOUNT\tFIRST\tLAST\tSUMMARY")
	for _, a := range alerts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.ID, a.Rule, a.Severity, a.Entity, a.Count, stamp(a.FirstSeen), stamp(a.LastSeen), a.Summary)
	}
	return tw.Flush()
}

// WriteText prints the report for a person: the counts, each malformed
// line, then one line per rule with its matches and alerts.
func (r Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%d events, %d malformed lines\n", r.Events, len(r.Malformed))
	for _, m := range r.Malformed {
		fmt.Fprintf(w, "  line %d: %s\n", m.Line, m.Err)
	}
	for _, rr := range r.Rules {
		if _, err := fmt.Fprintf(w, "%-32s %8d matches %4d alerts\n", rr.Name, rr.Matches, rr.Alerts); err != nil {
			return err
		}
	}
	return nil
}
