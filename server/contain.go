package server

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/custos-dev/custos/detect"
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

// RevokeToken needs the token's hash; the ledger is keyed by it, not by jti.
func (c containment) RevokeToken(ctx context.Context, jti, reason string) error {
	return ErrUnsupported
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

func (c containment) ForceRelogin(ctx context.Context, subject, reason string) error {
	return ErrUnsupported
}
