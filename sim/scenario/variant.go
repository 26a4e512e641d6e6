package scenario

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/shop"
)

// Variant is an attacker who adapts: the same goal (every member's data)
// reached by a route today's controls were not built around. Every variant
// but StolenKey replaces the forged-token attack of the scenario file with a
// crawl of its own through the member-ID space (one my-information request
// per ID, in order, missing IDs included), starting at CrawlStart; customers'
// traffic is unchanged.
//
// Sources of realism: the residential-proxy crawl (distributed) follows the
// shape of commercial proxy pools selling domestic addresses by the request
// (a fresh address, carrier or fixed-line, every few requests, with the user
// agents of real phones and browsers); the slow crawl follows the pacing of
// credential-stuffing tools that stay under per-address rate limits; a stolen
// client secret and replayed tokens are the two ways a token can be real and
// still not the customer's (RFC 9700 §4.10, §4.14).
type Variant string

// The attacker variants.
const (
	// StolenKey is the scenario file's attack: tokens signed with the copied
	// key, never issued (refused as not_issued).
	StolenKey Variant = "stolen-key"
	// StolenClientSecret: the login service's client secret is stolen; the
	// authority issues real, ledgered tokens for sequential members with no
	// login session behind them, from an overseas network (AttackRate; from
	// AttackNetworks domestic sources with AttackDomestic).
	StolenClientSecret Variant = "stolen-client-secret"
	// Distributed: the crawl with forged tokens spread over DistributedSources
	// domestic sources (their own /24, ASN and user agent each), each reading
	// MembersPerSource members before the next takes over (AttackRate).
	Distributed Variant = "distributed"
	// LowAndSlow: the crawl with forged tokens from SlowSources domestic
	// sources taking turns, each sending one request every SlowEvery.
	LowAndSlow Variant = "low-and-slow"
	// ReplayedTokens: real customers' tokens (ReplayedTokens of them, random
	// members) copied and replayed from abroad (AttackRate; from home with
	// AttackDomestic). In a world with DPoP-bound tokens none is served.
	ReplayedTokens Variant = "replayed-tokens"
)

// Variants returns every variant, in report order.
func Variants() []Variant {
	return []Variant{StolenKey, StolenClientSecret, Distributed, LowAndSlow, ReplayedTokens}
}

// ParseVariants reads a list of variant names; "all" is every variant.
func ParseVariants(names []string) ([]Variant, error) {
	var out []Variant
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "all" {
			return Variants(), nil
		}
		if !slices.Contains(Variants(), Variant(n)) {
			all := make([]string, 0, 5)
			for _, v := range Variants() {
				all = append(all, string(v))
			}
			return nil, fmt.Errorf("%w: unknown attacker %q (want %s or all)", ErrConfig, n, strings.Join(all, ", "))
		}
		if !slices.Contains(out, Variant(n)) {
			out = append(out, Variant(n))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no attacker named", ErrConfig)
	}
	return out, nil
}

// Defaults of the variants' parameters (not scaled, but ReplayedTokens).
const (
	DefaultAttackRate         = 20.0  // requests per second of the fast variants
	DefaultDistributedSources = 5_000 // domestic sources of the distributed crawl
	DefaultMembersPerSource   = 3     // requests from one source before the next
	DefaultSlowSources        = 3     // sources of the slow crawl
	DefaultSlowEvery          = 5 * time.Second
	DefaultReplayedTokens     = 50_000 // customer tokens replayed, at scale 1
)

// AttackerVariant is the attacker of the scenario: Attacker, or StolenKey when unset.
func (c Config) AttackerVariant() Variant {
	if c.Attacker == "" {
		return StolenKey
	}
	return c.Attacker
}

func (c Config) validateVariant() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	switch {
	case !slices.Contains(Variants(), c.AttackerVariant()):
		return bad("attacker", fmt.Sprintf("%q is not a variant", c.Attacker))
	case c.AttackerVariant() == StolenKey:
		return nil
	case !(c.AttackRate > 0) || c.AttackRate > 1e6:
		return bad("attack_rate", "must be in (0, 1e6] requests per second")
	case c.DistributedSources < 1 || c.DistributedSources > 1<<20:
		return bad("distributed_sources", "must be in [1, 1048576]")
	case c.MembersPerSource == 0:
		return bad("members_per_source", "must be positive")
	case c.SlowSources < 1 || c.SlowSources > 1000:
		return bad("slow_sources", "must be in [1, 1000]")
	case c.SlowEvery < time.Millisecond:
		return bad("slow_every", "must be at least 1ms")
	case c.AttackerVariant() == ReplayedTokens && c.scaled(c.ReplayedTokens) == 0:
		return bad("replayed_tokens", "must be positive")
	}
	return nil
}

// newVariant is the crawl of an adapting attacker, on the profile page.
func newVariant(cfg Config, pop shop.Population, a attacker, v Variant, profileTotal uint64) *crawler {
	mode, total, prefix, tok := walkAll, profileTotal, byte('f'), Forged
	rate := cfg.AttackRate
	switch v {
	case StolenClientSecret:
		tok, prefix = IssuedStolenSecret, 'i'
	case ReplayedTokens:
		tok, prefix, mode, total = Replayed, 't', randomExisting, cfg.scaled(cfg.ReplayedTokens)
	case LowAndSlow:
		rate = float64(cfg.SlowSources) / cfg.SlowEvery.Seconds()
	}
	end := cfg.CrawlStart.Add(time.Duration(float64(total) / rate * float64(time.Second)))
	c := newCrawler(cfg, pop, a, tagProfile, pageProfile, mode, cfg.CrawlStart, end, total)
	c.tok, c.prefix = tok, prefix
	if v == StolenClientSecret || v == ReplayedTokens {
		c.uas = desktopUAs // a client library or a browser, not a scraper's name
	}
	return c
}
