// Package provider lets an identity provider the shop keeps (Keycloak, Ory
// Hydra, Auth0, or any issuer through a webhook) record each token it issues
// in custos's ledger, and lets gateways check that provider's tokens: its
// published keys, the claims, then provenance by (iss, id) against the record.
//
// Provider tokens come in every shape the field issues (typ JWT, aud a list,
// client in azp), so they are read with go-jose, the library the authority
// already uses for tokens from outside; custos's own tokens stay with the
// strict reader of package token.
package provider

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/custos-dev/custos/jwks"
)

// Kind says how a provider reports what it issues.
type Kind string

// Kinds of provider.
const (
	// Keycloak posts its events (EventRepresentation JSON) to
	// POST /v1/providers/{name}/keycloak/event; a token is known by the
	// event's details.token_id, its jti.
	Keycloak Kind = "keycloak"
	// Hydra calls POST /v1/providers/{name}/hydra/token-hook before it
	// issues; a token is known by the custos_prv claim the hook returns.
	Hydra Kind = "hydra"
	// Auth0: an Action asks POST /v1/ledger/prv for a fresh prv, records
	// it with POST /v1/ledger/record and sets it as the custos_prv claim.
	Auth0 Kind = "auth0"
	// Webhook: any issuer that calls POST /v1/ledger/record itself.
	Webhook Kind = "webhook"
)

// Bounds of the configuration.
const (
	DefaultClockSkew = 30 * time.Second
	MaxClockSkew     = 5 * time.Minute
	// MaxLifespan bounds access_token_lifespan and a recorded exp.
	MaxLifespan = 24 * time.Hour
)

// Config is one provider.
type Config struct {
	// Name is how credentials and endpoints name it.
	Name string
	// Issuer is its iss, compared exactly.
	Issuer string
	// JWKSURL is where it publishes its signing keys (https; http only on
	// a loopback address).
	JWKSURL string
	// Audience must be among the aud of its tokens a gateway accepts.
	Audience string
	Kind     Kind
	// AccessTokenLifespan is the provider's access-token lifetime, for
	// the kinds whose report carries no exp (hydra, keycloak): the record
	// says exp = time of the report + lifespan + clock skew.
	AccessTokenLifespan time.Duration
	// ClockSkew is the allowance between the provider's clock and custos's
	// (0: DefaultClockSkew).
	ClockSkew time.Duration
	// Clients, when not empty, are the only client_ids whose tokens the
	// hook or event endpoints record; any other gets 403.
	Clients []string
}

// NameRE is the grammar of provider names.
var NameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// BindsAudience reports whether the record of a token binds its aud. A
// Keycloak event carries no audience, so Keycloak records do not.
func (c *Config) BindsAudience() bool { return c.Kind != Keycloak }

// Validate checks the list, fills defaults and names the first bad field
// (providers[i].field).
func Validate(list []Config) error {
	names, issuers := map[string]bool{}, map[string]bool{}
	for i := range list {
		c := &list[i]
		bad := func(field, format string, a ...any) error {
			return fmt.Errorf("providers[%d].%s: %s", i, field, fmt.Sprintf(format, a...))
		}
		if !NameRE.MatchString(c.Name) {
			return bad("name", "%q must be 1 to 64 of A-Z a-z 0-9 . _ -", c.Name)
		}
		if names[c.Name] {
			return bad("name", "%q configured twice", c.Name)
		}
		names[c.Name] = true
		u, err := url.Parse(c.Issuer)
		if c.Issuer == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return bad("issuer", "%q is not an absolute http(s) URL", c.Issuer)
		}
		if issuers[c.Issuer] {
			return bad("issuer", "%q configured twice", c.Issuer)
		}
		issuers[c.Issuer] = true
		if err := jwks.CheckURL(c.JWKSURL); err != nil {
			return bad("jwks_url", "%v", err)
		}
		if c.Audience == "" || !printable(c.Audience, 256) {
			return bad("audience", "required: the aud a gateway accepts from this provider's tokens")
		}
		switch c.Kind {
		case Keycloak, Hydra:
			if c.AccessTokenLifespan <= 0 || c.AccessTokenLifespan > MaxLifespan {
				return bad("access_token_lifespan", "required for kind %s, in (0, %s]", c.Kind, MaxLifespan)
			}
		case Auth0, Webhook:
			if c.AccessTokenLifespan != 0 {
				return bad("access_token_lifespan", "only for kinds hydra and keycloak (kind %s records carry their exp)", c.Kind)
			}
		default:
			return bad("kind", "must be keycloak, hydra, auth0 or webhook, not %q", c.Kind)
		}
		if c.ClockSkew == 0 {
			c.ClockSkew = DefaultClockSkew
		}
		if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
			return bad("clock_skew", "%s outside 0..%s", c.ClockSkew, MaxClockSkew)
		}
		for j, cl := range c.Clients {
			if cl == "" || !printable(cl, maxField) || slices.Contains(c.Clients[:j], cl) {
				return bad("clients", "entry %d (%q) is empty, not printable or repeated", j, cl)
			}
		}
	}
	return nil
}

// maxField bounds ids, subjects, clients and audiences in records.
const maxField = 256

// printable reports whether s is 1..max bytes of printable ASCII without
// spaces.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
