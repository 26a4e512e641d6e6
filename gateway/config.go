package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/verdict"
)

// Defaults applied by [New] to zero fields of [Config].
const (
	DefaultLeeway            = verdict.DefaultLeeway
	MaxLeeway                = verdict.MaxLeeway
	DefaultSubjectHeader     = "X-Custos-Subject"
	DefaultProvenanceTimeout = verdict.DefaultProvenanceTimeout
	DefaultCacheSize         = 100_000
	DefaultGatewayName       = "custos-gateway"
	DefaultReplayCacheSize   = 1_000_000
	// MaxDPoPWindow bounds DPoPConfig.Window.
	MaxDPoPWindow = 5 * time.Minute
)

// HeaderPrefix marks headers the gateway owns: incoming copies are removed
// before the request goes upstream.
const HeaderPrefix = "X-Custos-"

// Mode is how a check acts on a failure.
type Mode string

const (
	Enforce Mode = "enforce" // refuse the request (the default)
	Observe Mode = "observe" // allow it; the event records what enforce would have done
)

// Unmatched is what the gateway does with a request whose path matches no
// route, when routes are configured.
type Unmatched string

const (
	// Deny refuses it as unknown_route (the default).
	Deny Unmatched = "deny"
	// Forward lets it through unbound: its token is checked, no subject
	// is. A path with no canonical form is still refused.
	Forward Unmatched = "forward"
)

// Route tells the gateway what a path carries and whose data it is. It is
// the configuration file's route (gateway.routes) as decoded, one type for
// both.
type Route = config.Route

// Audiences is one or more accepted audiences.
type Audiences []string

// Config is the gateway's configuration as a Go value; the configuration
// file's gateway section (config.Gateway) is translated into it once, by
// server.GatewayConfig. Zero values get the Default* constants.
type Config struct {
	GatewayName string        // names this gateway in events
	Issuer      string        // required: the iss tokens must carry
	Audience    Audiences     // required: accepted aud values
	Leeway      time.Duration // clock skew allowed on exp, nbf, iat
	Routes      []Route
	// Unmatched is deny (default) or forward; it matters only when Routes
	// is not empty. With no routes every path goes through and no subject
	// is bound (see [Gateway.Warnings]).
	Unmatched Unmatched
	// Modes per check, keyed by the reason the check produces
	// (e.g. "not_issued": observe). Unlisted checks enforce.
	Modes         map[event.Reason]Mode
	SubjectHeader string   // carries the verified sub upstream
	Decoys        []string // member IDs no real customer has
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed. Empty:
	// the source is always the peer address.
	TrustedProxies []string
	// GeoIP lists MaxMind-format databases read for country.iso_code and
	// autonomous_system_number (e.g. a Country and an ASN database).
	GeoIP      []string
	EventsFile string // optional JSON-lines copy of every event
	// ProvenanceTimeout bounds one ledger lookup; past it the request is
	// refused as ledger_unavailable.
	ProvenanceTimeout time.Duration
	// CacheSize bounds the set of tokens whose signature was verified.
	CacheSize int
	// DPoP configures the proofs key-bound tokens need (see dpop.go).
	DPoP DPoPConfig
	// Providers, when set, checks the tokens of identity providers the
	// shop keeps (provider.Set): their keys, claims and recorded
	// provenance. Tokens of any other issuer are checked as custos's.
	Providers verdict.Providers
}

// DPoPConfig configures the checking of DPoP proofs (RFC 9449).
type DPoPConfig struct {
	// PublicURL is the scheme and host clients address the API by; a
	// proof's htu must name it. Empty: the request's scheme and Host.
	PublicURL string
	// Window bounds |now - iat| of a proof (0: dpop.DefaultWindow).
	Window time.Duration
	// ReplayCacheSize bounds the in-memory replay cache (0:
	// DefaultReplayCacheSize); [Gateway.SetReplay] replaces the cache.
	ReplayCacheSize int
	// Nonce requires a server nonce in every proof.
	Nonce bool
	// NonceSecret keys the nonces (at least 32 bytes), the same on every
	// replica. Empty with Nonce: a random secret of this process.
	NonceSecret []byte
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("gateway: invalid config")

func (c *Config) setDefaults() {
	c.Leeway = cmp.Or(c.Leeway, DefaultLeeway)
	c.SubjectHeader = cmp.Or(c.SubjectHeader, DefaultSubjectHeader)
	c.ProvenanceTimeout = cmp.Or(c.ProvenanceTimeout, DefaultProvenanceTimeout)
	c.CacheSize = cmp.Or(c.CacheSize, DefaultCacheSize)
	c.GatewayName = cmp.Or(c.GatewayName, DefaultGatewayName)
	c.Unmatched = cmp.Or(c.Unmatched, Deny)
	c.DPoP.Window = cmp.Or(c.DPoP.Window, dpop.DefaultWindow)
	c.DPoP.ReplayCacheSize = cmp.Or(c.DPoP.ReplayCacheSize, DefaultReplayCacheSize)
}

// validate checks the config as a whole, naming the field at fault.
func (c *Config) validate() error {
	if c.Issuer == "" {
		return fmt.Errorf("%w: issuer is required", ErrConfig)
	}
	if len(c.Audience) == 0 || slices.Contains(c.Audience, "") {
		return fmt.Errorf("%w: audience needs one or more non-empty values", ErrConfig)
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		return fmt.Errorf("%w: leeway %s outside 0..%s", ErrConfig, c.Leeway, MaxLeeway)
	}
	if c.ProvenanceTimeout < 0 {
		return fmt.Errorf("%w: provenance_timeout is negative", ErrConfig)
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("%w: cache_size is negative", ErrConfig)
	}
	if c.Unmatched != Deny && c.Unmatched != Forward {
		return fmt.Errorf("%w: unmatched %q is not deny or forward", ErrConfig, c.Unmatched)
	}
	if c.DPoP.Window < 0 || c.DPoP.Window > MaxDPoPWindow {
		return fmt.Errorf("%w: dpop.window %s outside 0..%s", ErrConfig, c.DPoP.Window, MaxDPoPWindow)
	}
	if c.DPoP.ReplayCacheSize < 0 {
		return fmt.Errorf("%w: dpop.replay_cache_size is negative", ErrConfig)
	}
	if c.DPoP.PublicURL != "" {
		if u, err := dpop.CanonicalURL(c.DPoP.PublicURL); err != nil || strings.Count(u, "/") != 3 || !strings.HasSuffix(u, "/") {
			return fmt.Errorf("%w: dpop.public_url %q is not a scheme and host (https://api.example)", ErrConfig, c.DPoP.PublicURL)
		}
	}
	if c.DPoP.Nonce && c.DPoP.NonceSecret != nil && len(c.DPoP.NonceSecret) < 32 {
		return fmt.Errorf("%w: dpop nonce secret shorter than 32 bytes", ErrConfig)
	}
	for r, m := range c.Modes {
		if !slices.Contains(event.Reasons, r) {
			return fmt.Errorf("%w: modes: unknown check %q", ErrConfig, r)
		}
		if m != Enforce && m != Observe {
			return fmt.Errorf("%w: modes: %s: mode %q is not enforce or observe", ErrConfig, r, m)
		}
	}
	if _, err := clientaddr.Parse(c.TrustedProxies); err != nil {
		return fmt.Errorf("%w: trusted_proxies: %v", ErrConfig, err)
	}
	for i, r := range c.Routes {
		if _, _, err := subjectSegment(r); err != nil {
			return fmt.Errorf("%w: routes[%d]: %v", ErrConfig, i, err)
		}
	}
	return nil
}

// subjectSegment finds which path segment of r.Pattern holds SubjectParam:
// its index among the '/'-separated segments and whether it is a "..."
// wildcard that takes the rest of the path.
func subjectSegment(r Route) (int, bool, error) {
	pat := r.Pattern
	if i := strings.IndexAny(pat, " \t"); i >= 0 {
		pat = strings.TrimLeft(pat[i:], " \t")
	}
	slash := strings.IndexByte(pat, '/')
	if slash < 0 {
		return 0, false, fmt.Errorf("pattern %q has no path", r.Pattern)
	}
	if r.SubjectParam == "" {
		return -1, false, nil
	}
	for i, seg := range strings.Split(pat[slash+1:], "/") {
		switch seg {
		case "{" + r.SubjectParam + "}":
			return i, false, nil
		case "{" + r.SubjectParam + "...}":
			return i, true, nil
		}
	}
	return 0, false, fmt.Errorf("subject_param %q is not a wildcard of %q", r.SubjectParam, r.Pattern)
}
