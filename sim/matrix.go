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
	ContainmentOn     bool     `json:"containment_on"`
	baseline          bool
}

// The detection goals the matrix is judged against.
const (
	GoalAlertWithin    = 5 * time.Minute // every variant's first alert, in every custos world
	GoalMaxRecords     = 1000            // records exposed with containment on
	GoalMaxFalsePer10M = 1.0             // false alarms per 10 M normal requests...
	GoalMinNormal      = 50_000_000      // ...over at least this many
)

// Goal is one goal, judged over the matrix's rows.
type Goal struct {
	Goal   string `json:"goal"`
	Met    bool   `json:"met"`
	Detail string `json:"detail"`
}

// Matrix is the detection matrix: every variant's report, and one row per
// variant and world.
type Matrix struct {
	Rows    []MatrixRow `json:"matrix"`
	Goals   []Goal      `json:"goals"`
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
				ContainmentOn: w.ContainmentOn, baseline: w.Name == "baseline" || strings.HasPrefix(w.Name, "baseline "),
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
				// Contained before the attack began (a key dead beforehand)
				// is contained from its first request: never negative.
				row.ContainmentSecs = secsPtr(max(w.Containment.Sub(first), 0), true)
			}
			m.Rows = append(m.Rows, row)
		}
	}
	m.Goals = m.judge()
	return m
}

// judge checks the custos worlds' rows against the goals.
func (m Matrix) judge() []Goal {
	alert := Goal{Goal: "first alert within " + duration(GoalAlertWithin) + " of the variant's start, in every custos world", Met: true}
	contain := Goal{Goal: "with containment on, at most " + count(GoalMaxRecords) + " records exposed", Met: true}
	fa := Goal{Goal: fmt.Sprintf("false alarms at most %g in every 10 M normal requests, over at least %s", GoalMaxFalsePer10M, count(GoalMinNormal)), Met: true}
	var late, leaky, noisy []string
	var worstDelay float64
	var worstRecords, contained, minNormal int64 = 0, 0, -1
	var worstRate float64
	for _, r := range m.Rows {
		if r.baseline {
			continue
		}
		name := string(r.Attacker) + " × " + r.World
		if r.FirstAlertSecs == nil || *r.FirstAlertSecs > GoalAlertWithin.Seconds() || *r.FirstAlertSecs < 0 {
			late = append(late, name)
		} else {
			worstDelay = max(worstDelay, *r.FirstAlertSecs)
		}
		if r.ContainmentOn {
			contained++
			worstRecords = max(worstRecords, r.RecordsExposed)
			if r.RecordsExposed > GoalMaxRecords || r.ContainmentSecs == nil {
				leaky = append(leaky, name)
			}
		}
		if minNormal < 0 || r.NormalRequests < minNormal {
			minNormal = r.NormalRequests
		}
		if rate, ok := (World{FalseAlarms: r.FalseAlarms, NormalRequests: r.NormalRequests}).FalseAlarmRate(); ok {
			worstRate = max(worstRate, rate)
			if rate > GoalMaxFalsePer10M {
				noisy = append(noisy, name)
			}
		}
	}
	alert.Detail = "latest " + duration(time.Duration(worstDelay*float64(time.Second)))
	if len(late) > 0 {
		alert.Met, alert.Detail = false, "late or never: "+strings.Join(late, "; ")
	}
	contain.Detail = "most " + count(worstRecords) + " records, in " + strconv.FormatInt(contained, 10) + " rows"
	if contained == 0 {
		contain.Met, contain.Detail = false, "no world with containment on"
	} else if len(leaky) > 0 {
		contain.Met, contain.Detail = false, "above the bound or never contained: "+strings.Join(leaky, "; ")
	}
	switch {
	case minNormal < GoalMinNormal:
		fa.Met, fa.Detail = false, "not measured: "+count(max(minNormal, 0))+" normal requests in the smallest row"
	case len(noisy) > 0:
		fa.Met, fa.Detail = false, "above the bound: "+strings.Join(noisy, "; ")
	default:
		fa.Detail = "highest " + strconv.FormatFloat(worstRate, 'f', 2, 64) + " in 10 M, over at least " + count(minNormal)
	}
	return []Goal{alert, contain, fa}
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
	b.WriteString("\nGoals:\n\n")
	for _, g := range m.Goals {
		met := "met"
		if !g.Met {
			met = "**not met**"
		}
		fmt.Fprintf(&b, "- %s: %s (%s)\n", g.Goal, met, g.Detail)
	}
	b.WriteString("\nThe baseline's first alert and containment are historical (the attacker's e-mails, the key's revocation), for stolen-key only. A behaviour alert is one by a rule blind to the token's provenance: what observe mode or a log-ingesting gateway still sees.\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("failed to write the matrix: %w", err)
	}
	return nil
}
