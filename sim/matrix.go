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

// MatrixRow is one attacker variant against one world.
type MatrixRow struct {
	Attacker scenario.Variant `json:"attacker"`
	World    string           `json:"world"`
	// FirstAlertSecs is the first alert's delay after the variant's first
	// request; nil if nothing alerted.
	FirstAlertSecs *float64 `json:"first_alert_delay_seconds"`
	FirstAlertRule string   `json:"first_alert_rule,omitempty"`
	// FirstBehaviourSecs is the first alert by a rule blind to the token's
	// provenance (see World.FirstBehaviour), after the first request.
	FirstBehaviourSecs *float64 `json:"first_behaviour_alert_delay_seconds"`
	FirstBehaviourRule string   `json:"first_behaviour_rule,omitempty"`
	// ContainmentSecs is when the attack stopped being served, after its
	// first request; nil if never.
	ContainmentSecs *float64 `json:"containment_seconds"`
	RecordsExposed  int64    `json:"records_exposed"`
	SubjectsExposed int64    `json:"subjects_exposed"`
	AttackSent      int64    `json:"attack_sent"`
	AttackServed    int64    `json:"attack_served"`
	FalseAlarms     int64    `json:"false_alarms"`
	// FalseAlarmsPer10M is null below MinNormalForRate normal requests.
	FalseAlarmsPer10M *float64 `json:"false_alarms_per_10m"`
	NormalRequests    int64    `json:"normal_requests"`
}

// Matrix is the detection matrix: every variant's report, and one row per
// variant and world.
type Matrix struct {
	Rows    []MatrixRow `json:"matrix"`
	Reports []Report    `json:"reports"`
}

// NewMatrix lays the reports (one per variant) out as a matrix.
func NewMatrix(reps ...Report) Matrix {
	m := Matrix{Reports: reps}
	for _, r := range reps {
		first := r.Timeline.FirstForged
		for _, w := range r.Worlds {
			row := MatrixRow{
				Attacker: r.Attacker, World: w.Name, SubjectsExposed: w.SubjectsExposed,
				AttackSent: w.ForgedSent, AttackServed: w.ForgedServed,
				FalseAlarms: w.FalseAlarms, FalseAlarmsPer10M: ratePtr(w.FalseAlarmRate()), NormalRequests: w.NormalRequests,
			}
			for _, n := range w.Records {
				row.RecordsExposed += n
			}
			if !w.FirstAlert.IsZero() {
				row.FirstAlertSecs = secsPtr(w.FirstAlert.Sub(first), true)
				row.FirstAlertRule = w.FirstAlertRule
			}
			if !w.FirstBehaviour.IsZero() {
				row.FirstBehaviourSecs = secsPtr(w.FirstBehaviour.Sub(first), true)
				row.FirstBehaviourRule = w.FirstBehaviourRule
			}
			if !w.Containment.IsZero() {
				row.ContainmentSecs = secsPtr(w.Containment.Sub(first), true)
			}
			m.Rows = append(m.Rows, row)
		}
	}
	return m
}

// WriteJSON writes the matrix and its reports as indented JSON.
func (m Matrix) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("failed to write the matrix: %w", err)
	}
	return nil
}

// FalseAlarmCell is how a world's false alarms are printed: a rate per 10 M
// with the normal requests it rests on, or, below MinNormalForRate, the count.
func FalseAlarmCell(falseAlarms, normal int64) string {
	w := World{FalseAlarms: falseAlarms, NormalRequests: normal}
	if rate, ok := w.FalseAlarmRate(); ok {
		return strconv.FormatFloat(rate, 'f', 2, 64) + " per 10 M (over " + count(normal) + ")"
	}
	return count(falseAlarms) + " in " + count(normal) + " (too few for a rate)"
}

// WriteMarkdown writes the matrix as a Markdown table.
func (m Matrix) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	if len(m.Reports) > 0 {
		r := m.Reports[0]
		fmt.Fprintf(&b, "Detection matrix, replay %s, mode %s, seed %d, scale %g.\n\n", r.Scenario, r.Mode, r.Seed, r.Scale)
	}
	b.WriteString("| attacker | world | first alert after start | first alert rule | first behaviour alert | containment after start | records exposed | subjects exposed | attack requests served | false alarms |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	secs := func(p *float64) string {
		if p == nil {
			return "never"
		}
		return duration(time.Duration(*p * float64(time.Second)))
	}
	for _, r := range m.Rows {
		rule := r.FirstAlertRule
		if rule == "" {
			rule = "—"
		}
		bhv := secs(r.FirstBehaviourSecs)
		if r.FirstBehaviourRule != "" {
			bhv += " (" + r.FirstBehaviourRule + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s of %s | %s |\n", r.Attacker, escape(r.World),
			secs(r.FirstAlertSecs), rule, bhv, secs(r.ContainmentSecs), count(r.RecordsExposed), count(r.SubjectsExposed),
			count(r.AttackServed), count(r.AttackSent), FalseAlarmCell(r.FalseAlarms, r.NormalRequests))
	}
	b.WriteString("\nThe baseline's first alert and containment are historical (the attacker's e-mails, the key's revocation), for stolen-key only. A behaviour alert is one by a rule blind to the token's provenance: what observe mode or a log-ingesting gateway still sees.\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("failed to write the matrix: %w", err)
	}
	return nil
}
