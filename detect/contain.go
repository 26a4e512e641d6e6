package detect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/custos-dev/custos/event"
)

// Containment carries out the actions a rule may trigger. The authority and
// the gateway implement it; detection only calls it.
type Containment interface {
	RevokeKey(ctx context.Context, kid, reason string) error
	RevokeToken(ctx context.Context, jti string, reason string) error
	BlockSource(ctx context.Context, prefix netip.Prefix, until time.Time, reason string) error
	ForceRelogin(ctx context.Context, subject, reason string) error
}

// RecordedContainment is a Containment that also wants the whole action
// record, evidence included (the authority keeps it with the hold it makes).
// When the Containment set on the engine has it, Carry is called instead of
// the per-action methods.
type RecordedContainment interface {
	Carry(ctx context.Context, r ActionRecord) error
}

// Action names a containment action.
type Action string

const (
	ActionRevokeKey    Action = "revoke_key"
	ActionRevokeToken  Action = "revoke_token"
	ActionBlockSource  Action = "block_source"
	ActionForceRelogin Action = "force_relogin"
	// ActionSuspendClient suspends the secret of the client an issuance
	// alert names: the authority issues it nothing more. The Containment
	// must also be a [ClientSuspender].
	ActionSuspendClient Action = "suspend_client"
	// ActionBlockCountry refuses every request from one country (by the
	// gateway's GeoIP lookup of the source) until the block ends. It is
	// never taken against a country of the allowed set (the shop's home
	// market), on a log's claim, or on a token that did not pass every
	// check. The Containment must also be a [CountryBlocker].
	ActionBlockCountry Action = "block_country"
)

// CountryBlocker is the Containment of a deployment whose gateways can
// refuse requests by the country of their source (block_country).
type CountryBlocker interface {
	BlockCountry(ctx context.Context, country string, until time.Time, reason string) error
}

// ErrCannotBlockCountry is recorded for block_country when the Containment
// is not a CountryBlocker.
var ErrCannotBlockCountry = errors.New("containment cannot block countries")

// ClientSuspender is the Containment of an authority that can suspend a
// client's secret (suspend_client); every replica refuses it from then on.
type ClientSuspender interface {
	SuspendClient(ctx context.Context, clientID, reason string) error
}

// ErrCannotSuspend is recorded for suspend_client when the Containment is
// not a ClientSuspender.
var ErrCannotSuspend = errors.New("containment cannot suspend clients")

// Actions lists every containment action.
var Actions = []Action{ActionRevokeKey, ActionRevokeToken, ActionBlockSource, ActionForceRelogin, ActionSuspendClient, ActionBlockCountry}

func (a Action) valid() bool {
	switch a {
	case ActionRevokeKey, ActionRevokeToken, ActionBlockSource, ActionForceRelogin, ActionSuspendClient, ActionBlockCountry:
		return true
	}
	return false
}

// RuleContainmentRateLimited is the alert raised when a containment action
// is not taken because its kind reached its rate limit.
const RuleContainmentRateLimited = "containment_rate_limited"

// ErrNoTarget is recorded when the alert lacks what the action needs (a kid,
// a jti, a source address, a subject).
var ErrNoTarget = errors.New("alert has no target for the action")

// ErrNoContainment is recorded when a non-dry-run action has no Containment to call.
var ErrNoContainment = errors.New("no containment configured")

// ErrWeakEvidence is recorded, and the action not taken, when the alert's
// evidence does not point at what the action would contain: a key is
// revoked only on a validly signed token that the authority never issued,
// as checked by a custos gateway; nothing is contained on a log's claim.
var ErrWeakEvidence = errors.New("evidence does not implicate the target")

// ErrRateLimited is recorded, and the action not taken, when its kind has
// reached its limit (see [RateLimit]).
var ErrRateLimited = errors.New(RuleContainmentRateLimited)

// DefaultBlockFor is how long block_source blocks a source when the policy
// names no duration; MaxBlockFor bounds any block.
const (
	DefaultBlockFor = time.Hour
	MaxBlockFor     = 7 * 24 * time.Hour
)

// RateLimit bounds how many actions of one kind are taken per window.
type RateLimit struct {
	Max int           `yaml:"max"`
	Per time.Duration `yaml:"per"`
}

// DefaultRateLimits are the limits of actions the configuration names none for.
var DefaultRateLimits = map[Action]RateLimit{
	ActionRevokeKey:     {Max: 2, Per: time.Hour},
	ActionRevokeToken:   {Max: 100, Per: time.Minute},
	ActionForceRelogin:  {Max: 20, Per: time.Minute},
	ActionBlockSource:   {Max: 50, Per: time.Minute},
	ActionSuspendClient: {Max: 5, Per: time.Hour},
	// Ten countries an hour: a crawler renting hosting networks in eight
	// countries is blocked in all of them within its first minutes, and a
	// flood of spread alerts cannot cut the shop off from the world.
	ActionBlockCountry: {Max: 10, Per: time.Hour},
}

// ActionRecord is one containment action, taken, refused, or (dry run) only
// recorded, with the alert that caused it and the evidence it rests on.
type ActionRecord struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"` // event time of the alert that caused it
	Action  Action    `json:"action"`
	Target  string    `json:"target"`
	Until   time.Time `json:"until,omitempty"`
	Rule    string    `json:"rule"`
	AlertID string    `json:"alert_id"`
	Reason  string    `json:"reason"`
	DryRun  bool      `json:"dry_run"`
	Error   string    `json:"error,omitempty"`
	// Evidence is the raising event's fields (kid, jti, subject, src_ip,
	// route, reason, reported ...) that the action rests on.
	Evidence map[string]string `json:"evidence,omitempty"`
}

// keyEvidence reports whether alert a is evidence against its signing key
// itself: the raising event is a custos gateway's own finding that a validly
// signed token was never issued.
func keyEvidence(a *Alert) bool {
	return a.Attrs["reason"] == string(event.ReasonNotIssued) && a.Attrs["reported"] == "" && a.Attrs["kid"] != ""
}

// homeFunc reports whether a country is one of the allowed set (the shop's
// home market), which containment never blocks.
type homeFunc func(country string) bool

// plan derives the record of action act for alert a under policy p. The
// record carries an error, and is not to be executed, when the evidence does
// not support the action or it has no target. home, when not nil, names the
// countries block_country refuses to block.
func plan(a *Alert, p ContainPolicy, act Action, home homeFunc) (ActionRecord, error) {
	r := ActionRecord{
		ID: "act-" + a.ID + "-" + string(act), Time: a.Raised, Action: act, Rule: a.Rule, AlertID: a.ID,
		DryRun: p.DryRun, Reason: fmt.Sprintf("custos alert %s (%s on %s)", a.ID, a.Rule, a.Entity),
		Evidence: evidenceOf(a),
	}
	if a.Attrs["reported"] != "" {
		return r, fmt.Errorf("%w: the raising event is a log's claim (reported %q), not checked by custos", ErrWeakEvidence, a.Attrs["reported"])
	}
	switch act {
	case ActionRevokeKey:
		if !keyEvidence(a) {
			return r, fmt.Errorf("%w: a key is revoked only on a validly signed token the authority never issued (reason %q)", ErrWeakEvidence, a.Attrs["reason"])
		}
		r.Target = a.Attrs["kid"]
	case ActionRevokeToken:
		r.Target = a.Attrs["jti"]
	case ActionForceRelogin:
		// The session to end is the token holder's, never the member the
		// request named (a decoy, or a victim).
		r.Target = a.Attrs["token_sub"]
		if a.Attrs["reason"] == string(event.ReasonNotIssued) {
			// A forged token names any subject it likes: the customer it
			// names did nothing.
			return r, fmt.Errorf("%w: the token was never issued, its subject is not the actor", ErrWeakEvidence)
		}
	case ActionSuspendClient:
		r.Target = a.Attrs["client"]
	case ActionBlockCountry:
		cc := a.Attrs["country"]
		if !IsCountryCode(cc) {
			break
		}
		r.Target = cc
		// Only a real token, checked by a custos gateway and passing every
		// check, is evidence against a country: an anonymous prober or a
		// forger must not be able to cut the shop off from one.
		if a.Attrs["reason"] != "" || a.Attrs["jti"] == "" {
			return r, fmt.Errorf("%w: a country is blocked only on tokens that passed every check (reason %q)", ErrWeakEvidence, a.Attrs["reason"])
		}
		if home != nil && home(cc) {
			return r, fmt.Errorf("%w: %s is an allowed country, never blocked", ErrWeakEvidence, cc)
		}
		r.Until = a.Raised.Add(min(cmp.Or(p.For, DefaultBlockFor), MaxBlockFor))
	case ActionBlockSource:
		if ip, err := netip.ParseAddr(a.Attrs["src_ip"]); err == nil {
			r.Target = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()).String()
			if n := a.Attrs["network"]; n != "" {
				r.Target = n
			}
			d := p.For
			if d <= 0 {
				d = DefaultBlockFor
			}
			r.Until = a.Raised.Add(min(d, MaxBlockFor))
		}
	}
	if r.Target == "" {
		return r, fmt.Errorf("failed to plan %s: %w", act, ErrNoTarget)
	}
	return r, nil
}

// evidenceOf copies the alert's event fields with its rule and severity.
func evidenceOf(a *Alert) map[string]string {
	m := make(map[string]string, len(a.Attrs)+3)
	for k, v := range a.Attrs {
		m[k] = v
	}
	m["rule"], m["severity"], m["entity"] = a.Rule, string(a.Severity), a.Entity
	return m
}

// execute calls c for r unless it is a dry run.
func execute(ctx context.Context, c Containment, r ActionRecord) error {
	if r.DryRun {
		return nil
	}
	if c == nil {
		return ErrNoContainment
	}
	if rc, ok := c.(RecordedContainment); ok {
		return rc.Carry(ctx, r)
	}
	return Carry(ctx, c, r)
}

// Carry calls the method of c that carries out r.
func Carry(ctx context.Context, c Containment, r ActionRecord) error {
	switch r.Action {
	case ActionRevokeKey:
		return c.RevokeKey(ctx, r.Target, r.Reason)
	case ActionRevokeToken:
		return c.RevokeToken(ctx, r.Target, r.Reason)
	case ActionForceRelogin:
		return c.ForceRelogin(ctx, r.Target, r.Reason)
	case ActionSuspendClient:
		cs, ok := c.(ClientSuspender)
		if !ok {
			return ErrCannotSuspend
		}
		return cs.SuspendClient(ctx, r.Target, r.Reason)
	case ActionBlockCountry:
		cb, ok := c.(CountryBlocker)
		if !ok {
			return ErrCannotBlockCountry
		}
		if !IsCountryCode(r.Target) {
			return fmt.Errorf("failed to block country %q: %w", r.Target, ErrNoTarget)
		}
		return cb.BlockCountry(ctx, r.Target, r.Until, r.Reason)
	case ActionBlockSource:
		p, err := netip.ParsePrefix(r.Target)
		if err != nil {
			return fmt.Errorf("failed to parse %q: %w", r.Target, err)
		}
		return c.BlockSource(ctx, p, r.Until, r.Reason)
	}
	return fmt.Errorf("unknown action %q", r.Action)
}

// IsCountryCode reports whether s is a country code as containment names
// one: exactly two uppercase ASCII letters (ISO 3166-1 alpha-2).
func IsCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// limiter counts actions taken per kind in fixed windows of the engine's clock.
type limiter struct {
	limits map[Action]RateLimit
	start  map[Action]time.Time
	n      map[Action]int
}

func newLimiter(l map[Action]RateLimit) *limiter {
	m := make(map[Action]RateLimit, len(DefaultRateLimits))
	for a, d := range DefaultRateLimits {
		m[a] = d
	}
	for a, v := range l {
		m[a] = v
	}
	return &limiter{limits: m, start: map[Action]time.Time{}, n: map[Action]int{}}
}

// allow counts one action of kind a at now and reports whether it is within
// the limit; the second result is true for the first refusal of a window.
func (l *limiter) allow(a Action, now time.Time) (ok, first bool) {
	lim := l.limits[a]
	if lim.Max <= 0 || lim.Per <= 0 {
		return true, false
	}
	if s := l.start[a]; s.IsZero() || !now.Before(s.Add(lim.Per)) || now.Before(s) {
		l.start[a], l.n[a] = now, 0
	}
	l.n[a]++
	return l.n[a] <= lim.Max, l.n[a] == lim.Max+1
}

// policyActions lists the actions of p in a fixed order.
func policyActions(p ContainPolicy) []Action {
	out := append([]Action(nil), p.Actions...)
	if p.Action != "" {
		out = append(out, p.Action)
	}
	seen := map[Action]bool{}
	uniq := out[:0]
	for _, a := range out {
		if !seen[a] {
			seen[a] = true
			uniq = append(uniq, a)
		}
	}
	sort.SliceStable(uniq, func(i, j int) bool { return actionOrder(uniq[i]) < actionOrder(uniq[j]) })
	return uniq
}

// actionOrder: what stops the request at once first (the token, the
// source), then the subject's other sessions, then the key.
func actionOrder(a Action) int {
	switch a {
	case ActionRevokeToken:
		return 0
	case ActionBlockSource, ActionBlockCountry:
		return 1
	case ActionForceRelogin:
		return 2
	}
	return 3
}
