package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/sim/scenario"
)

// Report is the replay's result: every world, with the scenario's timeline and
// the published figures of the breach.
type Report struct {
	Scenario   string              `json:"scenario"`
	Mode       string              `json:"mode"`
	Attacker   scenario.Variant    `json:"attacker"`
	Seed       uint64              `json:"seed"`
	Scale      float64             `json:"scale"`
	Requests   uint64              `json:"requests"`
	Volumes    scenario.Volumes    `json:"volumes"`
	Timeline   scenario.Timeline   `json:"timeline"`
	Historical scenario.Historical `json:"historical"`
	Worlds     []World             `json:"worlds"`
}

// ScenarioName names the replayed breach in reports.
const ScenarioName = "coupang-2025"

// NewReport gathers the worlds' outcomes for the stream s has produced. A
// world with a first alert but no AlertDelay gets the delay after the
// stream's first forged request.
func NewReport(s *scenario.Scenario, mode string, worlds ...World) Report {
	tl := s.Timeline()
	for i := range worlds {
		if w := &worlds[i]; !w.FirstAlert.IsZero() && w.AlertDelay == 0 {
			w.AlertDelay = w.FirstAlert.Sub(tl.FirstForged)
		}
	}
	return Report{
		Scenario: ScenarioName, Mode: mode, Attacker: s.Config().AttackerVariant(), Seed: s.Config().Seed, Scale: s.Config().Scale,
		Requests: s.Emitted(), Volumes: s.Volumes(), Timeline: tl, Historical: s.Historical(), Worlds: worlds,
	}
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("failed to write the report: %w", err)
	}
	return nil
}

// HistoricalColumn heads the column of published figures, placed just before
// the baseline world (or first if there is none).
const HistoricalColumn = "historical (published)"

// WriteMarkdown writes the report as a Markdown table, one column per world.
func (r Report) WriteMarkdown(w io.Writer) error {
	h := r.Historical
	hist := []string{
		day(h.KeyRevoked),
		h.Awareness.In(scenario.KST).Format(timeLayout) + " (external)",
		duration(h.Awareness.Sub(h.FirstForged)),
		day(h.KeyRevoked),
		"≈ " + mega(h.ProfileRecordsMin+h.AddressListMin+h.AddressEdit+h.Orders+h.NonexistentTokens) + "–" + mega(h.ProfileRecordsMax+h.AddressListMax+h.AddressEdit+h.Orders+h.NonexistentTokens) + " accesses",
		mega(h.Subjects),
		mega(h.Members),
		mega(h.NonMembers),
		"—",
		mega(h.ProfileRecordsMin) + "–" + mega(h.ProfileRecordsMax) + " accesses",
		"—",
		mega(h.AddressListMin) + "–" + mega(h.AddressListMax) + " accesses",
		count(h.AddressEdit) + " accesses",
		count(h.Orders) + " accesses",
		"—",
		duration(h.ScopePublished.Sub(h.Awareness)),
	}
	labels := []string{
		"key died", "first alert", "alert delay after first forged request", "containment",
		"forged requests served", "data subjects exposed", "· members", "· non-members",
	}
	for _, c := range Classes {
		labels = append(labels, "records: "+c)
	}
	labels = append(labels, "false alarms per 10M normal requests", "time to complete scope report")

	type column struct {
		head  string
		cells []string
	}
	var cols []column
	histAt := 0
	for i, wd := range r.Worlds {
		if wd.Name == "baseline" {
			histAt = i
			break
		}
	}
	for i, wd := range r.Worlds {
		if i == histAt {
			cols = append(cols, column{HistoricalColumn, hist})
		}
		cells := []string{
			stamp(wd.KeyDied), stamp(wd.FirstAlert), "—", stamp(wd.Containment),
			count(wd.ForgedServed) + " of " + count(wd.ForgedSent),
			count(wd.SubjectsExposed), count(wd.MembersExposed), count(wd.NonMembersExposed),
		}
		if !wd.FirstAlert.IsZero() {
			cells[2] = duration(wd.AlertDelay)
		}
		for _, c := range Classes {
			cells = append(cells, count(wd.Records[c]))
		}
		fa := "—"
		if rate, ok := wd.FalseAlarmRate(); ok {
			fa = strconv.FormatFloat(rate, 'f', 2, 64) + " (over " + count(wd.NormalRequests) + ")"
		} else if wd.NormalRequests > 0 {
			fa = count(wd.FalseAlarms) + " in " + count(wd.NormalRequests) + " (too few for a rate)"
		}
		scope := "—"
		if wd.TimeToScope != 0 {
			scope = duration(wd.TimeToScope)
		}
		cols = append(cols, column{wd.Name, append(cells, fa, scope)})
	}
	if len(r.Worlds) == 0 {
		cols = append(cols, column{HistoricalColumn, hist})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Replay %s, attacker %s, mode %s, seed %d, scale %g: %s requests (%s the attacker's).\n\n",
		r.Scenario, r.Attacker, r.Mode, r.Seed, r.Scale, count(int64(r.Requests)), count(int64(r.Volumes.Attack())))
	b.WriteString("| |")
	for _, c := range cols {
		b.WriteString(" " + escape(c.head) + " |")
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteByte('\n')
	for i, l := range labels {
		b.WriteString("| " + l + " |")
		for _, c := range cols {
			b.WriteString(" " + escape(c.cells[i]) + " |")
		}
		b.WriteByte('\n')
	}
	b.WriteString("\nHistorical figures count page accesses as published, not records; the simulated columns count records (one person's value in one answer).\n")
	for _, wd := range r.Worlds {
		for _, n := range wd.Notes {
			b.WriteString("\n- " + escape(wd.Name) + ": " + n)
		}
	}
	b.WriteByte('\n')
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("failed to write the report: %w", err)
	}
	return nil
}

func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(scenario.KST).Format(timeLayout)
}

func day(t time.Time) string { return t.In(scenario.KST).Format("2006-01-02") }

// count writes n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func mega(n int64) string { return strconv.FormatFloat(float64(n)/1e6, 'f', 2, 64) + " M" }

// duration writes d for people: days and hours, or minutes and seconds.
func duration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d >= 24*time.Hour:
		s = fmt.Sprintf("%d d %d h", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		s = fmt.Sprintf("%d h %d min", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		s = fmt.Sprintf("%d min %d s", d/time.Minute, d%time.Minute/time.Second)
	case d >= time.Second:
		s = strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	default:
		s = strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	}
	if neg {
		return "-" + s
	}
	return s
}
