package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
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

// Route tells the gateway what a path carries and whose data it is.
type Route struct {
	// Pattern is a net/http ServeMux pattern, e.g.
	// "GET /api/members/{memberId}/addresses". A pattern with a method also
	// binds the other methods on the same path, so changing the method does
	// not escape subject binding.
	Pattern string `yaml:"pattern"`
	// DataClasses the answer carries (event.ClassName, event.ClassAddress, …).
	DataClasses []string `yaml:"data_classes"`
	// SubjectParam names the wildcard that holds the member whose data this
	// is; it must equal the token's sub. Empty: no binding.
	SubjectParam string `yaml:"subject_param"`
}

// Audiences is one or more accepted audiences; YAML takes a string or a list.
type Audiences []string

// UnmarshalYAML accepts a scalar or a sequence of strings.
func (a *Audiences) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = Audiences{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*a = s
	return nil
}

// Config is the gateway's configuration. Zero values get the Default*
// constants.
type Config struct {
	GatewayName string        `yaml:"name"`     // names this gateway in events
	Issuer      string        `yaml:"issuer"`   // required: the iss tokens must carry
	Audience    Audiences     `yaml:"audience"` // required: accepted aud values
	Leeway      time.Duration `yaml:"leeway"`   // clock skew allowed on exp, nbf, iat
	Routes      []Route       `yaml:"routes"`
	// Unmatched is deny (default) or forward; it matters only when Routes
	// is not empty. With no routes every path goes through and no subject
	// is bound (see [Gateway.Warnings]).
	Unmatched Unmatched `yaml:"unmatched"`
	// Modes per check, keyed by the reason the check produces
	// (e.g. "not_issued": observe). Unlisted checks enforce.
	Modes         map[event.Reason]Mode `yaml:"modes"`
	SubjectHeader string                `yaml:"subject_header"` // carries the verified sub upstream
	Decoys        []string              `yaml:"decoys"`         // member IDs no real customer has
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed. Empty:
	// the source is always the peer address.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// GeoIP lists MaxMind-format databases read for country.iso_code and
	// autonomous_system_number (e.g. a Country and an ASN database).
	GeoIP      []string `yaml:"geoip"`
	EventsFile string   `yaml:"events_file"` // optional JSON-lines copy of every event
	// ProvenanceTimeout bounds one ledger lookup; past it the request is
	// refused as ledger_unavailable.
	ProvenanceTimeout time.Duration `yaml:"provenance_timeout"`
	// CacheSize bounds the set of tokens whose signature was verified.
	CacheSize int `yaml:"cache_size"`
	// DPoP configures the proofs key-bound tokens need (see dpop.go).
	DPoP DPoPConfig `yaml:"dpop"`
}

// DPoPConfig configures the checking of DPoP proofs (RFC 9449).
type DPoPConfig struct {
	// PublicURL is the scheme and host clients address the API by; a
	// proof's htu must name it. Empty: the request's scheme and Host.
	PublicURL string `yaml:"public_url"`
	// Window bounds |now - iat| of a proof (0: dpop.DefaultWindow).
	Window time.Duration `yaml:"window"`
	// ReplayCacheSize bounds the in-memory replay cache (0:
	// DefaultReplayCacheSize); [Gateway.SetReplay] replaces the cache.
	ReplayCacheSize int `yaml:"replay_cache_size"`
	// Nonce requires a server nonce in every proof.
	Nonce bool `yaml:"nonce"`
	// NonceSecret keys the nonces (at least 32 bytes), the same on every
	// replica. Empty with Nonce: a random secret of this process.
	NonceSecret []byte `yaml:"-"`
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("gateway: invalid config")

func (c *Config) setDefaults() {
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.SubjectHeader == "" {
		c.SubjectHeader = DefaultSubjectHeader
	}
	if c.ProvenanceTimeout == 0 {
		c.ProvenanceTimeout = DefaultProvenanceTimeout
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.GatewayName == "" {
		c.GatewayName = DefaultGatewayName
	}
	if c.Unmatched == "" {
		c.Unmatched = Deny
	}
	if c.DPoP.Window == 0 {
		c.DPoP.Window = dpop.DefaultWindow
	}
	if c.DPoP.ReplayCacheSize == 0 {
		c.DPoP.ReplayCacheSize = DefaultReplayCacheSize
	}
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
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("%w: trusted_proxies: %v", ErrConfig, err)
		}
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
