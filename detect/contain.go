package detect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Containment carries out the actions a rule may trigger. The authority and
// the gateway implement it; detection only calls it.
type Containment interface {
	RevokeKey(ctx context.Context, kid, reason string) error
	RevokeToken(ctx context.Context, jti string, reason string) error
	BlockSource(ctx context.Context, prefix netip.Prefix, until time.Time, reason string) error
	ForceRelogin(ctx context.Context, subject, reason string) error
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
)

// ClientSuspender is the Containment of an authority that can suspend a
// client's secret (suspend_client); every replica refuses it from then on.
type ClientSuspender interface {
	SuspendClient(ctx context.Context, clientID, reason string) error
}

// ErrCannotSuspend is recorded for suspend_client when the Containment is
// not a ClientSuspender.
var ErrCannotSuspend = errors.New("containment cannot suspend clients")

func (a Action) valid() bool {
	switch a {
	case ActionRevokeKey, ActionRevokeToken, ActionBlockSource, ActionForceRelogin, ActionSuspendClient:
		return true
	}
	return false
}

// ErrNoTarget is recorded when the alert lacks what the action needs (a kid,
// a jti, a source address, a subject).
var ErrNoTarget = errors.New("alert has no target for the action")

// ErrNoContainment is recorded when a non-dry-run action has no Containment to call.
var ErrNoContainment = errors.New("no containment configured")

// ActionRecord is one containment action, taken or (dry run) only recorded,
// with the alert that caused it.
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
}

// plan derives the action record for alert a under policy p.
func plan(a *Alert, p ContainPolicy) (ActionRecord, error) {
	r := ActionRecord{
		ID: "act-" + a.ID, Time: a.Raised, Action: p.Action, Rule: a.Rule, AlertID: a.ID,
		DryRun: p.DryRun, Reason: fmt.Sprintf("custos alert %s (%s on %s)", a.ID, a.Rule, a.Entity),
	}
	switch p.Action {
	case ActionRevokeKey:
		r.Target = a.Attrs["kid"]
	case ActionRevokeToken:
		r.Target = a.Attrs["jti"]
	case ActionForceRelogin:
		r.Target = a.Attrs["subject"]
	case ActionSuspendClient:
		r.Target = a.Attrs["client"]
	case ActionBlockSource:
		if ip, err := netip.ParseAddr(a.Attrs["src_ip"]); err == nil {
			r.Target = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()).String()
			if n := a.Attrs["network"]; n != "" {
				r.Target = n
			}
			r.Until = a.Raised.Add(p.For)
		}
	}
	if r.Target == "" {
		return r, fmt.Errorf("failed to plan %s: %w", p.Action, ErrNoTarget)
	}
	return r, nil
}

// execute calls c for r unless it is a dry run.
func execute(ctx context.Context, c Containment, r ActionRecord) error {
	if r.DryRun {
		return nil
	}
	if c == nil {
		return ErrNoContainment
	}
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
	case ActionBlockSource:
		p, err := netip.ParsePrefix(r.Target)
		if err != nil {
			return fmt.Errorf("failed to parse %q: %w", r.Target, err)
		}
		return c.BlockSource(ctx, p, r.Until, r.Reason)
	}
	return fmt.Errorf("unknown action %q", r.Action)
}
