package server

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/ledger"
)

// ErrUnsupported is returned for a containment action this deployment cannot
// carry out; detection records the failure with the alert.
var ErrUnsupported = errors.New("containment action not supported here")

// containment carries out detection's actions on the authority and the
// in-process gateway. Every action is attributed to custos/containment.
type containment struct{ s *Server }

var _ detect.Containment = containment{}

const containActor = "custos/containment"

func (c containment) RevokeKey(ctx context.Context, kid, reason string) error {
	return c.s.Keys.Revoke(ctx, kid, containActor, reason)
}

// tokenFinder finds live tokens by jti or subject (ledger/sqlite has it; on
// Redis, where it would mean scanning every key, these actions are refused).
type tokenFinder interface {
	Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error)
}

// revokeFound revokes every live token the finder returns, after the action
// is in the audit log.
func (c containment) revokeFound(ctx context.Context, kind, jti, sub, reason string) error {
	if c.s.finder == nil {
		return ErrUnsupported
	}
	if err := c.s.journal(ctx, "containment."+kind, map[string]any{"jti": jti, "subject": sub, "reason": reason, "actor": containActor}); err != nil {
		return err
	}
	hs, err := c.s.finder.Find(ctx, jti, sub, c.s.now())
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := c.s.Ledger.Revoke(ctx, h); err != nil && !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
	}
	return nil
}

// RevokeToken revokes the live token with this jti.
func (c containment) RevokeToken(ctx context.Context, jti, reason string) error {
	if jti == "" {
		return detect.ErrNoTarget
	}
	return c.revokeFound(ctx, "revoke_token", jti, "", reason)
}

func (c containment) BlockSource(ctx context.Context, p netip.Prefix, until time.Time, reason string) error {
	if c.s.Gateway == nil {
		return ErrUnsupported
	}
	if err := c.s.journal(ctx, "containment.block_source", map[string]any{"prefix": p.String(), "until": until, "reason": reason, "actor": containActor}); err != nil {
		return err
	}
	c.s.Gateway.Block(p, until, reason)
	return nil
}

// ForceRelogin revokes every live token of subject: the next request needs
// a fresh login.
func (c containment) ForceRelogin(ctx context.Context, subject, reason string) error {
	if subject == "" {
		return detect.ErrNoTarget
	}
	return c.revokeFound(ctx, "force_relogin", "", subject, reason)
}

var _ detect.ClientSuspender = containment{}

// SuspendClient refuses a client's secret from now on: the shared store
// marks it revoked, so every replica refuses it within authority.CacheTTL.
// Its owner registers a new client once the secret is safe again.
func (c containment) SuspendClient(ctx context.Context, clientID, reason string) error {
	if clientID == "" {
		return detect.ErrNoTarget
	}
	if err := c.s.journal(ctx, "containment.suspend_client", map[string]any{"client_id": clientID, "reason": reason, "actor": containActor}); err != nil {
		return err
	}
	return c.s.Creds.RevokeClientSecret(ctx, clientID, containActor, reason)
}

// issuanceFeed hands the authority's issuances to detection.
type issuanceFeed struct{ e *detect.Engine }

func (f issuanceFeed) Issued(ctx context.Context, c *authority.Client, r *authority.Request, jti, kid string, at time.Time) {
	f.e.Issued(detect.Issuance{Time: at, Client: c.ID, Subject: r.Subject, Session: r.SessionID,
		Caller: authority.CallerOf(ctx), ClientIP: r.ClientIP, JTI: jti, KID: kid})
}

// Containment is what detection's automatic containment calls on this server.
func (s *Server) Containment() detect.Containment { return containment{s} }
