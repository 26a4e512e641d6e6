package forensics

// Text output for a terminal: the scope summary, the deadline clocks, the
// files a scope leaves for the notification, and SQL answers as tables.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
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

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// WriteSummary prints the scope's figures for a person: subjects, exposures,
// sources, then a table of data classes and one of routes.
func (sc *Scope) WriteSummary(w io.Writer) error {
	if sc.Partial {
		fmt.Fprintf(w, "PARTIAL: %d unreadable event file(s) left out: %s\n\n", len(sc.SkippedFiles), strings.Join(sc.SkippedFiles, ", "))
	}
	fmt.Fprintf(w, "data subjects  %d (%d members, %d non-members)\n", sc.Subjects, sc.Members, sc.NonMembers)
	fmt.Fprintf(w, "exposures      %d requests returned personal data\n", sc.Exposures)
	fmt.Fprintf(w, "attempts       %d refused or failed\n", sc.Attempts)
	fmt.Fprintf(w, "first / last   %s / %s\n", stamp(sc.FirstExposure), stamp(sc.LastExposure))
	fmt.Fprintf(w, "event files    %d\n", sc.Files)
	fmt.Fprintf(w, "sources        %d IPs, %d countries, %d ASNs\n", sc.Sources.DistinctIPs, sc.Sources.DistinctCountries, sc.Sources.DistinctASNs)
	tw := newTable(w)
	if len(sc.Classes) > 0 {
		fmt.Fprintln(tw, "\nDATA CLASS\tSUBJECTS")
		for _, c := range sc.Classes {
			fmt.Fprintf(tw, "%s\t%d\n", c.Class, c.Subjects)
		}
	}
	if len(sc.Routes) > 0 {
		fmt.Fprintln(tw, "\nROUTE\tEXPOSURES\tSUBJECTS\tATTEMPTS")
		for _, r := range sc.Routes {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", r.Route, r.Exposures, r.Subjects, r.Attempts)
		}
	}
	return tw.Flush()
}

// WriteDeadlines prints the deadline clocks as a table: due time, time left
// or overdue, and the law.
func WriteDeadlines(w io.Writer, ds []Deadline) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "DEADLINE\tDUE\tSTATUS\tLAW")
	for _, d := range ds {
		status := "due in " + d.Remaining.Round(time.Minute).String()
		if d.Overdue {
			status = "OVERDUE by " + (-d.Remaining).Round(time.Minute).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Name, stamp(d.Due), status, d.Law)
	}
	return tw.Flush()
}

// WriteFiles writes the notification list (notification.csv and
// notification.parquet) and the report rep (report.md and report.json) into
// dir, created if missing, each file mode 0600. It returns the paths written,
// those before a failure included.
func (sc *Scope) WriteFiles(dir string, rep Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"notification.csv", sc.WriteNotificationCSV},
		{"notification.parquet", sc.WriteNotificationParquet},
		{"report.md", rep.WriteMarkdown},
		{"report.json", rep.WriteJSON},
	}
	var out []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return out, fmt.Errorf("failed to create %s: %w", p, err)
		}
		err = f.write(fh)
		if cerr := fh.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("failed to write %s: %w", p, cerr)
		}
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// WriteSQLTable prints an answer of [Store.SQL] as a table under upper-case
// column names; text cells are kept on one line.
func WriteSQLTable(w io.Writer, cols []string, rows [][]any) error {
	tw := newTable(w)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, v := range r {
			cells[i] = sqlCell(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// sqlCell renders one SQL value for a table; text is kept on one line.
func sqlCell(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(x)
	case []byte:
		return fmt.Sprintf("%x", x)
	}
	if b, err := json.Marshal(sqlJSONValue(v)); err == nil {
		if s := string(b); !strings.HasPrefix(s, `"`) {
			return s
		}
	}
	return fmt.Sprint(v)
}

// SQLJSONRows makes an answer of [Store.SQL] JSON-encodable: map keys
// become text and times RFC 3339 UTC.
func SQLJSONRows(rows [][]any) [][]any {
	out := make([][]any, len(rows))
	for i, r := range rows {
		out[i] = make([]any, len(r))
		for j, v := range r {
			out[i][j] = sqlJSONValue(v)
		}
	}
	return out
}

func sqlJSONValue(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = sqlJSONValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = sqlJSONValue(e)
		}
		return out
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Map {
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out[fmt.Sprint(it.Key().Interface())] = sqlJSONValue(it.Value().Interface())
		}
		return out
	}
	return v
}
