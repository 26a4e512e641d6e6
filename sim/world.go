// Package sim replays the Coupang 2025 breach in several worlds at once and reports,
// side by side, what each world let happen; sim/scenario generates the traffic.
//
// # Use
//
// A replay starts from a [scenario.Config] ([scenario.DefaultConfig] holds
// the investigation's figures; Scale shrinks it). Two ways to run it:
//
//   - [RunEvents] (custos simulate coupang) feeds the scenario's requests
//     straight into a signature-only [Baseline] and one [Custos] world per
//     [CustosOptions] (custody, lifecycle, containment), in one process, and
//     returns a [Report] with each world's exposure, first alert and time to
//     scope. [Run] is the loop underneath it, for any [Observer].
//   - [StartHTTP] then [HTTPReplay.Run] (custos simulate coupang --mode http,
//     custos demo) sends the same traffic over loopback HTTP through a real
//     custos server and gateway in front of the sample shop.
//
// Several reports, one per attacker variant, make a detection [Matrix]
// ([NewMatrix]). Reports and matrices print as Markdown or JSON.
package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/sim/scenario"
)

// Classes are the data classes a world reports records for, in table order.
var Classes = []string{
	event.ClassName, event.ClassEmail, event.ClassPhone,
	event.ClassAddress, event.ClassEntranceCode, event.ClassOrderHistory,
}

// World is what happened in one world of the replay.
type World struct {
	Name string
	// KeyDied is when the abused signing key stopped verifying (rotated out or
	// revoked); zero if it never did within the replay.
	KeyDied time.Time
	// FirstAlert is the first alert on the attack; zero if none.
	FirstAlert time.Time
	// FirstAlertRule is the rule of the first alert; empty if none or unknown.
	FirstAlertRule string
	// FirstBehaviour is the first alert on the attack by a rule that does not
	// look at the token's provenance (not not_issued, revoked_or_retired_key,
	// decoy_subject or departed_credential_use): what a gateway in observe
	// mode, or one that only ingests logs, would still see. Zero if none.
	FirstBehaviour     time.Time
	FirstBehaviourRule string
	// AlertDelay is FirstAlert minus the first forged request.
	AlertDelay time.Duration
	// Containment is when the attack stopped being served; zero if never.
	Containment time.Time
	// ContainmentOn: the world runs automatic containment.
	ContainmentOn bool
	ForgedSent    int64 // forged requests in the stream
	ForgedServed  int64 // forged requests the gateway passed to the shop
	// Data subjects whose data reached the attacker (decoys excluded), exact.
	SubjectsExposed   int64
	MembersExposed    int64
	NonMembersExposed int64
	// Records per data class: one record is one person's value of the class
	// in one answer (repeated reads count again, as page accesses do).
	Records map[string]int64
	// FalseAlarms is alerts raised on normal traffic, over NormalRequests
	// normal requests; see [World.FalseAlarmRate].
	FalseAlarms    int64
	NormalRequests int64
	// TimeToScope is from the first alert to a complete scope report (who,
	// which data classes, when, from where); zero if none was produced.
	TimeToScope time.Duration
	Notes       []string
}

type worldJSON struct {
	Name               string           `json:"name"`
	KeyDied            *time.Time       `json:"key_died"`
	FirstAlert         *time.Time       `json:"first_alert"`
	FirstAlertRule     string           `json:"first_alert_rule,omitempty"`
	FirstBehaviour     *time.Time       `json:"first_behaviour_alert"`
	FirstBehaviourRule string           `json:"first_behaviour_rule,omitempty"`
	AlertDelaySeconds  *float64         `json:"alert_delay_seconds"`
	Containment        *time.Time       `json:"containment"`
	ForgedSent         int64            `json:"forged_sent"`
	ForgedServed       int64            `json:"forged_served"`
	SubjectsExposed    int64            `json:"subjects_exposed"`
	MembersExposed     int64            `json:"members_exposed"`
	NonMembersExposed  int64            `json:"non_members_exposed"`
	Records            map[string]int64 `json:"records"`
	FalseAlarms        int64            `json:"false_alarms"`
	FalseAlarmsPer10M  *float64         `json:"false_alarms_per_10m"` // null below MinNormalForRate
	NormalRequests     int64            `json:"normal_requests"`
	TimeToScopeSecs    *float64         `json:"time_to_scope_seconds"`
	Notes              []string         `json:"notes"`
}

// MinNormalForRate is how many normal requests a false-alarm rate per 10
// million must rest on: below it, one alert more or less would move the rate
// by more than the rate itself says, so only the count is given.
const MinNormalForRate = 10_000_000

// FalseAlarmRate is false alarms per 10 million normal requests, when the run
// had at least MinNormalForRate of them (ok false otherwise).
func (w World) FalseAlarmRate() (per10M float64, ok bool) {
	if w.NormalRequests < MinNormalForRate {
		return 0, false
	}
	return float64(w.FalseAlarms) * 1e7 / float64(w.NormalRequests), true
}

func ratePtr(r float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	return &r
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func secsPtr(d time.Duration, set bool) *float64 {
	if !set {
		return nil
	}
	s := d.Seconds()
	return &s
}

// MarshalJSON writes times as RFC 3339 (null when absent) and durations in seconds.
func (w World) MarshalJSON() ([]byte, error) {
	rec := map[string]int64{}
	for _, c := range Classes {
		rec[c] = w.Records[c]
	}
	for c, n := range w.Records {
		rec[c] = n
	}
	notes := w.Notes
	if notes == nil {
		notes = []string{}
	}
	return json.Marshal(worldJSON{
		Name: w.Name, KeyDied: timePtr(w.KeyDied), FirstAlert: timePtr(w.FirstAlert), FirstAlertRule: w.FirstAlertRule,
		FirstBehaviour: timePtr(w.FirstBehaviour), FirstBehaviourRule: w.FirstBehaviourRule,
		AlertDelaySeconds: secsPtr(w.AlertDelay, !w.FirstAlert.IsZero()),
		Containment:       timePtr(w.Containment),
		ForgedSent:        w.ForgedSent, ForgedServed: w.ForgedServed,
		SubjectsExposed: w.SubjectsExposed, MembersExposed: w.MembersExposed, NonMembersExposed: w.NonMembersExposed,
		Records: rec, FalseAlarms: w.FalseAlarms, FalseAlarmsPer10M: ratePtr(w.FalseAlarmRate()), NormalRequests: w.NormalRequests,
		TimeToScopeSecs: secsPtr(w.TimeToScope, w.TimeToScope != 0), Notes: notes,
	})
}

// Observer is a world consuming the stream, one request at a time, in time
// order. r is reused after Observe returns. [Run] feeds one stream to every
// world; each yields a [World] for the [Report]. The [Baseline] world, the
// breached design, lives here; [Exposure] counts what any world let out.
type Observer interface {
	Observe(r *scenario.Request)
}

// ProgressEvery is how many requests pass between progress calls in [Run].
const ProgressEvery = 1 << 16

// Run feeds every request of s to each observer, in order, and calls progress
// (if not nil) every ProgressEvery requests and at the end. It stops early,
// returning the context's error, when ctx is done.
func Run(ctx context.Context, s *scenario.Scenario, progress func(done, expected uint64), obs ...Observer) error {
	var r scenario.Request
	expected := s.Expected()
	for n := uint64(1); s.NextInto(&r); n++ {
		for _, o := range obs {
			o.Observe(&r)
		}
		if n%ProgressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("failed to finish the replay: %w", err)
			}
			if progress != nil {
				progress(n, expected)
			}
		}
	}
	if progress != nil {
		progress(s.Emitted(), expected)
	}
	return nil
}
