package detect

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/custos-dev/custos/event"
)

// Report is what TestRules found.
type Report struct {
	Events    int          `json:"events"`
	Malformed []LineError  `json:"malformed,omitempty"`
	Rules     []RuleResult `json:"rules"`
	Alerts    []Alert      `json:"alerts"`
}

// LineError is an input line that could not be read.
type LineError struct {
	Line int    `json:"line"`
	Err  string `json:"error"`
}

// RuleResult is one rule's outcome over the events.
type RuleResult struct {
	Name    string `json:"name"`
	Matches int64  `json:"matches"`
	Alerts  int    `json:"alerts"`
}

// maxLine bounds one JSON line of events.
const maxLine = 1 << 20

// TestRules runs the custom rules in rulesFile (built-in detectors off) over
// eventsFile, JSON lines of access events, and reports matches and alerts.
// Malformed lines are reported with their numbers and skipped. It fails
// only on invalid rules or an unreadable input.
func TestRules(rulesFile, eventsFile io.Reader) (Report, error) {
	var cfg Config
	for _, t := range []*Toggle{&cfg.NotIssued, &cfg.ReportedNotIssued, &cfg.DecoySubject.Toggle, &cfg.RevokedKey, &cfg.DepartedCred,
		&cfg.Enumeration.Toggle, &cfg.UnknownSubject.Toggle, &cfg.ForeignOrigin.Toggle, &cfg.IPRotation.Toggle,
		&cfg.RouteVolume.Toggle, &cfg.TokenWithoutLogin.Toggle, &cfg.ForeignSpread.Toggle} {
		t.Disabled = true
	}
	e, err := New(cfg, func() time.Time { return time.Unix(0, 0) })
	if err != nil {
		return Report{}, err
	}
	if err := e.LoadRulesFrom("rules", rulesFile); err != nil {
		return Report{}, err
	}
	var rep Report
	sc := bufio.NewScanner(eventsFile)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(trimSpace(b)) == 0 {
			continue
		}
		var ev event.Access
		if err := json.Unmarshal(b, &ev); err != nil {
			rep.Malformed = append(rep.Malformed, LineError{line, err.Error()})
			continue
		}
		rep.Events++
		e.Process(ev)
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("failed to read events at line %d: %w", line+1, err)
	}
	rep.Alerts = e.Alerts()
	e.mu.Lock()
	for _, r := range e.rules.Load().rules {
		rr := RuleResult{Name: r.Name, Matches: r.matchCount()}
		for _, a := range rep.Alerts {
			if a.Rule == r.Name {
				rr.Alerts++
			}
		}
		rep.Rules = append(rep.Rules, rr)
	}
	e.mu.Unlock()
	return rep, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
