package forensics

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// progressEvery is how often, in rows, exports report progress.
const progressEvery = 100_000

func (sc *Scope) partialNote() string {
	return fmt.Sprintf("PARTIAL: %d unreadable event file(s) left out: %s", len(sc.SkippedFiles), strings.Join(sc.SkippedFiles, ", "))
}

// WriteNotificationCSV writes the notification list as CSV with the header
// subject,member,data_classes,first_exposure,last_exposure (classes joined by
// ";", times RFC 3339 UTC). A partial list starts with a "# PARTIAL: …" line.
func (sc *Scope) WriteNotificationCSV(w io.Writer) error {
	if sc.Partial {
		if _, err := fmt.Fprintf(w, "# %s\n", sc.partialNote()); err != nil {
			return fmt.Errorf("failed to write notification list: %w", err)
		}
	}
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"subject", "member", "data_classes", "first_exposure", "last_exposure"}); err != nil {
		return fmt.Errorf("failed to write notification list: %w", err)
	}
	n := 0
	err := sc.Each(context.Background(), func(e Exposure) error {
		n++
		if sc.Progress != nil && n%progressEvery == 0 {
			sc.Progress(n, int(sc.Subjects))
		}
		return cw.Write([]string{csvSafe(e.Subject), strconv.FormatBool(e.Member), strings.Join(e.DataClasses, ";"),
			e.First.Format(time.RFC3339Nano), e.Last.Format(time.RFC3339Nano)})
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	if err != nil {
		return fmt.Errorf("failed to write notification list: %w", err)
	}
	if sc.Progress != nil {
		sc.Progress(n, int(sc.Subjects))
	}
	return nil
}

// csvSafe neutralises values a spreadsheet would run as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// notifyRow is the Parquet layout of the notification list.
type notifyRow struct {
	Subject     string    `parquet:"subject"`
	Member      bool      `parquet:"member"`
	DataClasses []string  `parquet:"data_classes,list"`
	First       time.Time `parquet:"first_exposure,timestamp(microsecond:local)"`
	Last        time.Time `parquet:"last_exposure,timestamp(microsecond:local)"`
}

// WriteNotificationParquet writes the notification list as Parquet with the
// CSV's columns; a partial list carries the key-value metadata "partial".
func (sc *Scope) WriteNotificationParquet(w io.Writer) error {
	pw := parquet.NewGenericWriter[notifyRow](w, parquet.Compression(&zstd.Codec{Level: zstd.SpeedFastest}))
	if sc.Partial {
		pw.SetKeyValueMetadata("partial", sc.partialNote())
	}
	buf := make([]notifyRow, 0, 1024)
	n := 0
	err := sc.Each(context.Background(), func(e Exposure) error {
		n++
		if sc.Progress != nil && n%progressEvery == 0 {
			sc.Progress(n, int(sc.Subjects))
		}
		buf = append(buf, notifyRow{Subject: e.Subject, Member: e.Member, DataClasses: e.DataClasses, First: e.First, Last: e.Last})
		if len(buf) == cap(buf) {
			if _, err := pw.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		return nil
	})
	if err == nil && len(buf) > 0 {
		_, err = pw.Write(buf)
	}
	if err == nil {
		err = pw.Close()
	}
	if err != nil {
		return fmt.Errorf("failed to write notification list: %w", err)
	}
	return nil
}

// ReportMeta is what the report needs beyond the events: the incident, the
// awareness time the legal clocks start from, measures taken and a contact.
type ReportMeta struct {
	Incident     string    `json:"incident"`
	Organization string    `json:"organization"`
	Contact      string    `json:"contact"`
	Awareness    time.Time `json:"awareness"`
	// How describes the attack in words (e.g. "tokens forged with a former
	// employee's signing key"); the report adds keys, reasons and routes.
	How      string   `json:"how,omitempty"`
	Measures []string `json:"measures"`
}

// Report is the regulator report: what was exposed, when, how, how many, the
// measures taken, a contact and the deadline clocks.
type Report struct {
	Partial      bool       `json:"partial"`
	SkippedFiles []string   `json:"skipped_files,omitempty"`
	Generated    time.Time  `json:"generated"`
	Meta         ReportMeta `json:"meta"`
	Deadlines    []Deadline `json:"deadlines"`
	Scope        *Scope     `json:"scope"`
}

// Report assembles the regulator report as of now.
func (sc *Scope) Report(meta ReportMeta, now time.Time) Report {
	return Report{Partial: sc.Partial, SkippedFiles: sc.SkippedFiles, Generated: now.UTC(), Meta: meta,
		Deadlines: Deadlines(meta.Awareness, now), Scope: sc}
}

// WriteJSON writes the report as indented JSON; "partial" is its first field.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("failed to write report: %w", err)
	}
	return nil
}

// WriteMarkdown writes the report as Markdown. A partial report says so on
// its first line.
func (r Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	sc := r.Scope
	if r.Partial {
		fmt.Fprintf(&b, "**%s**\n\n", sc.partialNote())
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	}
	fmt.Fprintf(&b, "# Personal data breach report: %s\n\n", mdEsc(r.Meta.Incident))
	fmt.Fprintf(&b, "- Organisation: %s\n- Contact: %s\n- Aware since: %s\n- Report generated: %s\n\n",
		mdEsc(r.Meta.Organization), mdEsc(r.Meta.Contact), ts(r.Meta.Awareness), ts(r.Generated))
	b.WriteString("## Deadlines\n\n| obligation | law | due | status |\n|---|---|---|---|\n")
	for _, d := range r.Deadlines {
		status := "due in " + d.Remaining.Round(time.Minute).String()
		if d.Overdue {
			status = "OVERDUE by " + (-d.Remaining).Round(time.Minute).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", d.Name, d.Law, ts(d.Due), status)
	}
	b.WriteString("\n## How many\n\n")
	fmt.Fprintf(&b, "- Data subjects affected: **%d** (%d members, %d non-members)\n", sc.Subjects, sc.Members, sc.NonMembers)
	fmt.Fprintf(&b, "- Requests that returned personal data: %d\n- Refused or failed attempts: %d\n\n", sc.Exposures, sc.Attempts)
	b.WriteString("## What was exposed\n\n| data class | subjects |\n|---|---|\n")
	for _, c := range sc.Classes {
		fmt.Fprintf(&b, "| %s | %d |\n", mdEsc(c.Class), c.Subjects)
	}
	b.WriteString("\n| route | requests | subjects | attempts |\n|---|---|---|---|\n")
	for _, rc := range sc.Routes {
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", mdEsc(rc.Route), rc.Exposures, rc.Subjects, rc.Attempts)
	}
	fmt.Fprintf(&b, "\n## When\n\n- First exposure: %s\n- Last exposure: %s\n\n", ts(sc.FirstExposure), ts(sc.LastExposure))
	tl, unit := sc.Daily, "day"
	if len(sc.Hourly) <= 72 {
		tl, unit = sc.Hourly, "hour"
	}
	fmt.Fprintf(&b, "| %s | requests exposing data | attempts |\n|---|---|---|\n", unit)
	for _, t := range tl {
		fmt.Fprintf(&b, "| %s | %d | %d |\n", ts(t.Start), t.Exposures, t.Attempts)
	}
	b.WriteString("\n## How\n\n")
	if r.Meta.How != "" {
		fmt.Fprintf(&b, "%s\n\n", mdEsc(r.Meta.How))
	}
	writeCounts(&b, "signing key", sc.Keys)
	writeCounts(&b, "refusal reason", sc.Reasons)
	fmt.Fprintf(&b, "Sources: %d distinct IP addresses, %d countries, %d networks (ASN).\n\n",
		sc.Sources.DistinctIPs, sc.Sources.DistinctCountries, sc.Sources.DistinctASNs)
	writeCounts(&b, "country", sc.Sources.Countries)
	writeCounts(&b, "ASN", sc.Sources.ASNs)
	b.WriteString("## Measures taken\n\n")
	for _, m := range r.Meta.Measures {
		fmt.Fprintf(&b, "- %s\n", mdEsc(m))
	}
	if len(r.Meta.Measures) == 0 {
		b.WriteString("- none recorded\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("failed to write report: %w", err)
	}
	return nil
}

func writeCounts(b *strings.Builder, what string, cs []Count) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintf(b, "| %s | requests exposing data | attempts |\n|---|---|---|\n", what)
	for _, c := range cs {
		k := c.Key
		if k == "" {
			k = "(none)"
		}
		fmt.Fprintf(b, "| %s | %d | %d |\n", mdEsc(k), c.Exposures, c.Attempts)
	}
	b.WriteString("\n")
}

// mdEsc keeps event-derived text from breaking the report's tables.
func mdEsc(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}
