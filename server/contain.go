package server

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/ledger"
	ledgerredis "github.com/custos-dev/custos/ledger/redis"
	ledgersqlite "github.com/custos-dev/custos/ledger/sqlite"
)

// ErrUnsupported is returned for a containment action this deployment cannot
// carry out; detection records the failure with the alert.
var ErrUnsupported = errors.New("containment action not supported here")

// containment carries out detection's actions on the authority and the
// in-process gateway. Every action is attributed to custos/containment.
type containment struct{ s *Server }

var (
	_ detect.Containment         = containment{}
	_ detect.RecordedContainment = containment{}
)

const containActor = "custos/containment"

func (c containment) RevokeKey(ctx context.Context, kid, reason string) error {
	return c.s.Keys.Revoke(ctx, kid, containActor, reason)
}

// tokenFinder finds live tokens by jti or subject: both ledger backends do,
// SQLite by scanning its live rows, Redis from the jti and subject indexes
// it writes with each record. A backend without it refuses revoke_token and
// force_relogin (ErrUnsupported).
type tokenFinder interface {
	Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error)
}

var (
	_ tokenFinder = (*ledgersqlite.Backend)(nil)
	_ tokenFinder = (*ledgerredis.Backend)(nil)
	_ tokenFinder = (*ledgerredis.Sharded)(nil)
)

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

// BlockSource makes a hold that every gateway enforces: the in-process one
// and every standalone one following the containment stream.
func (c containment) BlockSource(ctx context.Context, p netip.Prefix, until time.Time, reason string) error {
	return c.s.addHold(ctx, blockHold(p, until, reason, containActor))
}

// BlockCountry makes a hold that every gateway with a GeoIP database
// enforces: requests from the country are refused as blocked_source. A
// country of detect.allowed_countries is refused.
func (c containment) BlockCountry(ctx context.Context, country string, until time.Time, reason string) error {
	return c.s.addHold(ctx, countryHold(country, until, reason, containActor))
}

var _ detect.CountryBlocker = containment{}

// Carry carries out a detection action; a block keeps the action's ID and
// evidence in its hold.
func (c containment) Carry(ctx context.Context, r detect.ActionRecord) error {
	var action string
	switch r.Action {
	case detect.ActionBlockSource:
		action = gateway.HoldBlockSource
	case detect.ActionBlockCountry:
		action = gateway.HoldBlockCountry
	default:
		return detect.Carry(ctx, c, r)
	}
	return c.s.addHold(ctx, gateway.Hold{ID: r.ID, Action: action, Target: r.Target, Until: r.Until.UTC(),
		Reason: r.Reason, Actor: containActor, AlertID: r.AlertID, Rule: r.Rule, Evidence: r.Evidence})
}

// ForceRelogin revokes every live token of subject: the next request needs
// a fresh login.
func (c containment) ForceRelogin(ctx context.Context, subject, reason string) error {
	if subject == "" {
		return detect.ErrNoTarget
	}
	return c.revokeFound(ctx, "force_relogin", "", subject, reason)
}

// containPolicies maps detect.contain to detection's policies, each in
// proportion to its evidence: a validly signed token the authority never
// issued means its key is in the wrong hands (revoke the key); a decoy hit
// with an issued token points at that token, its holder's sessions and its
// source (detection refuses to revoke a key on such evidence); issuance
// that no login explains points at the client's secret; many customers'
// data read with real tokens from one foreign country points at that
// country.
func containPolicies(d config.Detect) (map[string]detect.ContainPolicy, map[detect.Action]detect.RateLimit) {
	l := d.ContainmentLimits
	limits := map[detect.Action]detect.RateLimit{
		detect.ActionRevokeKey:     detect.RateLimit(l.RevokeKey),
		detect.ActionRevokeToken:   detect.RateLimit(l.RevokeToken),
		detect.ActionForceRelogin:  detect.RateLimit(l.ForceRelogin),
		detect.ActionBlockSource:   detect.RateLimit(l.BlockSource),
		detect.ActionSuspendClient: detect.RateLimit(l.SuspendClient),
		detect.ActionBlockCountry:  detect.RateLimit(l.BlockCountry),
	}
	if !d.Contain {
		return nil, limits
	}
	pols := map[string]detect.ContainPolicy{
		detect.RuleNotIssued: {Action: detect.ActionRevokeKey, DryRun: d.DryRun},
		detect.RuleDecoySubject: {Actions: []detect.Action{detect.ActionRevokeKey, detect.ActionRevokeToken, detect.ActionForceRelogin, detect.ActionBlockSource},
			DryRun: d.DryRun, For: d.BlockFor},
	}
	// Tokens asked for with a client's secret, with no login behind them,
	// in ID order or at many times the usual rate: the secret is in the
	// wrong hands, suspend it.
	for _, r := range []string{detect.RuleIssuanceNoLogin, detect.RuleIssuanceSequence, detect.RuleIssuanceRate} {
		pols[r] = detect.ContainPolicy{Action: detect.ActionSuspendClient, DryRun: d.DryRun}
	}
	// Many customers' data read from one foreign country with real tokens:
	// their tokens are replayed from there, over whatever networks; block
	// the country (never an allowed one) at every gateway.
	pols[detect.RuleForeignSpread] = detect.ContainPolicy{Action: detect.ActionBlockCountry, DryRun: d.DryRun, For: d.CountryBlockFor}
	return pols, limits
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
