package detect

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Severity ranks an alert.
type Severity string

const (
	Info     Severity = "info"
	Low      Severity = "low"
	Medium   Severity = "medium"
	High     Severity = "high"
	Critical Severity = "critical"
)

func (s Severity) valid() bool {
	switch s {
	case Info, Low, Medium, High, Critical:
		return true
	}
	return false
}

// Built-in rule names, as they appear in alerts.
const (
	RuleNotIssued         = "not_issued"
	RuleReportedNotIssued = "reported_not_issued"
	RuleDecoySubject      = "decoy_subject"
	RuleRevokedKey        = "revoked_or_retired_key"
	RuleDepartedCred      = "departed_credential_use"
	RuleEnumeration       = "enumeration"
	RuleSequentialWalk    = "enumeration_sequential"
	RuleUnknownSubject    = "unknown_subject_rate"
	RuleForeignOrigin     = "foreign_origin"
	RuleIPRotation        = "ip_rotation"
	RuleRouteVolume       = "route_volume"
	RuleTokenWithoutLogin = "token_without_login"
	RuleIDCoverage        = "id_coverage"
	RuleForeignSpread     = "foreign_spread"

	// Issuance side (Engine.Issued), keyed by the client.
	RuleIssuanceNoLogin  = "issuance_without_login"
	RuleIssuanceSequence = "issuance_sequential"
	RuleIssuanceNetwork  = "issuance_network"
	RuleIssuanceRate     = "issuance_rate"
)

// Defaults. Thresholds are chosen so that ordinary shop traffic (a member
// looking at their own data, from home and phone, through NAT) stays quiet.
const (
	DefaultDedupWindow    = time.Hour
	DefaultIncidentWindow = 24 * time.Hour
	DefaultMaxAlerts      = 10000
	DefaultMaxIncidents   = 2000
	DefaultMaxActions     = 10000
	DefaultSampleIDs      = 10
	DefaultMaxKeys        = 8192

	DefaultEnumerationWindow    = 10 * time.Minute
	DefaultEnumerationThreshold = 200  // distinct subjects per source address per window
	DefaultEnumerationPerNet    = 1000 // distinct subjects per /24 per window
	DefaultWalkGap              = 3    // member IDs at most this far apart are "next"
	DefaultWalkRun              = 50   // consecutive near-sequential IDs

	DefaultUnknownWindow   = 10 * time.Minute
	DefaultUnknownMinCount = 50  // not-found answers per source per window
	DefaultUnknownMinRatio = 0.5 // of that source's subject-bound requests

	DefaultForeignHistoryMin = 20 // events before a subject's own country history counts

	// Customers read their own data, from home: the data of many distinct
	// customers read from one foreign country within minutes, with tokens
	// that passed every check, is tokens replayed from abroad.
	DefaultSpreadWindow    = 10 * time.Minute
	DefaultSpreadThreshold = 20   // distinct subjects read from one foreign country per window
	MaxSpreadThreshold     = 1000 // bounds the per-country state (one entry per subject)

	DefaultRotationWindow     = time.Hour
	DefaultRotationPerToken   = 6  // distinct networks behind one jti
	DefaultRotationPerSubject = 10 // distinct networks behind one subject

	DefaultVolumeFactor   = 5.0  // times the learned hour-of-week baseline
	DefaultVolumeMinCount = 1000 // requests in the hour before the detector speaks
	DefaultVolumeAlpha    = 0.3  // EWMA weight of a new week's observation
	DefaultVolumeMaxRoute = 1024

	DefaultLoginGrace = 30 * time.Second

	// A block of the member-ID space is a few hundred customers; each reads
	// their own data a few times a day, so a block sees a handful of
	// distinct IDs an hour. A crawl reads the whole block.
	DefaultCoverageWindow    = time.Hour
	DefaultCoverageBlock     = 1000 // member IDs per block
	DefaultCoverageThreshold = 250  // distinct IDs of one block read within the window

	// A login service asks for a token after each login, for the person
	// who logged in, from its own servers.
	DefaultIssuanceWindow     = 10 * time.Minute
	DefaultIssuanceNoLoginMin = 20  // tokens without a login session per client per window
	DefaultIssuanceHistoryMin = 100 // issuances before a client's caller networks count
	DefaultIssuanceRateBucket = 5 * time.Minute
	DefaultIssuanceRateFactor = 5.0 // times the client's usual issuances per bucket
	DefaultIssuanceRateMin    = 300 // issuances in the bucket before the rate speaks
)

// Config configures the engine. The zero value of any field means its default.
type Config struct {
	DedupWindow    time.Duration `yaml:"dedup_window"`    // one alert per rule and entity per window
	IncidentWindow time.Duration `yaml:"incident_window"` // alerts sharing a rule or entity within it join one incident
	MaxAlerts      int           `yaml:"max_alerts"`      // alerts kept in memory
	MaxIncidents   int           `yaml:"max_incidents"`
	MaxActions     int           `yaml:"max_actions"`
	SampleIDs      int           `yaml:"sample_ids"` // request ids kept per alert
	MaxKeys        int           `yaml:"max_keys"`   // tracked keys per detector dimension

	NotIssued         Toggle                  `yaml:"not_issued"`
	ReportedNotIssued Toggle                  `yaml:"reported_not_issued"` // a log's claim of not_issued
	DecoySubject      DecoyConfig             `yaml:"decoy_subject"`
	RevokedKey        Toggle                  `yaml:"revoked_or_retired_key"`
	DepartedCred      Toggle                  `yaml:"departed_credential_use"`
	Enumeration       EnumerationConfig       `yaml:"enumeration"`
	UnknownSubject    UnknownSubjectConfig    `yaml:"unknown_subject_rate"`
	ForeignOrigin     ForeignOriginConfig     `yaml:"foreign_origin"`
	IPRotation        IPRotationConfig        `yaml:"ip_rotation"`
	RouteVolume       RouteVolumeConfig       `yaml:"route_volume"`
	TokenWithoutLogin TokenWithoutLoginConfig `yaml:"token_without_login"`
	IDCoverage        IDCoverageConfig        `yaml:"id_coverage"`
	ForeignSpread     ForeignSpreadConfig     `yaml:"foreign_spread"`
	Issuance          IssuanceConfig          `yaml:"issuance"`

	// Containment maps a rule name to what to do when it raises a new alert.
	Containment map[string]ContainPolicy `yaml:"containment"`
	// ContainmentLimits bounds the actions taken per kind and window (the
	// kinds it does not name take DefaultRateLimits; Max 0: no limit).
	ContainmentLimits map[Action]RateLimit `yaml:"containment_limits"`
}

// Toggle is the part every detector's configuration has.
type Toggle struct {
	Disabled bool     `yaml:"disabled"`
	Severity Severity `yaml:"severity"`
}

// DecoyConfig configures decoy_subject.
type DecoyConfig struct {
	Toggle   `yaml:",inline"`
	Subjects []string `yaml:"subjects"` // decoy member ids, besides the gateway's decoy_subject reason
}

// EnumerationConfig configures enumeration and enumeration_sequential.
type EnumerationConfig struct {
	Toggle     `yaml:",inline"`
	Window     time.Duration `yaml:"window"`
	Threshold  uint64        `yaml:"threshold"`   // distinct subjects per source address per window
	PerNetwork uint64        `yaml:"per_network"` // per /24 or /48
	// Populations share an ASN, a user agent and a signing key, so these
	// three are off (0) unless set for the deployment's traffic.
	PerASN       uint64 `yaml:"per_asn"`
	PerUserAgent uint64 `yaml:"per_user_agent"`
	PerKeyID     uint64 `yaml:"per_kid"`
	WalkGap      int64  `yaml:"walk_gap"`
	WalkRun      uint32 `yaml:"walk_run"` // 0 means default; negative not possible
	NoWalk       bool   `yaml:"no_walk"`
}

// IDCoverageConfig configures id_coverage: how much of one block of the
// numeric member-ID space is read within a window, by any source. Its state
// is keyed by the data read, which an attacker cannot multiply: spreading a
// crawl over more networks, ASNs, user agents, keys or clients, or slowing
// each source down, does not lower the coverage of the blocks it walks.
type IDCoverageConfig struct {
	Toggle    `yaml:",inline"`
	Window    time.Duration `yaml:"window"`
	Block     uint64        `yaml:"block"`     // member IDs per block
	Threshold uint64        `yaml:"threshold"` // distinct IDs of one block per window
}

// ForeignSpreadConfig configures foreign_spread: customer data of at least
// Threshold distinct subjects read within Window from one country outside
// the allowed set (foreign_origin's Allowed, with its per-route overrides),
// by events a custos gateway checked whose token passed every check
// (verdict allow, no reason). Its state is keyed by the country, which an
// attacker cannot multiply as he multiplies networks, ASNs or tokens: at
// most Threshold entries for each of the 676 two-letter codes. A forged,
// missing or refused token, or a log's claim, never counts.
type ForeignSpreadConfig struct {
	Toggle    `yaml:",inline"`
	Window    time.Duration `yaml:"window"`
	Threshold uint32        `yaml:"threshold"` // distinct subjects from one foreign country per window
}

// IssuanceConfig configures the issuance-side detectors (see
// [Engine.Issued]): issuance_without_login, issuance_sequential,
// issuance_network (at NetworkSeverity) and issuance_rate. Their state is
// keyed by the client, bounded by MaxKeys clients and 16 × MaxKeys
// sessions.
type IssuanceConfig struct {
	Toggle          `yaml:",inline"`
	Window          time.Duration `yaml:"window"`       // of issuance_without_login and issuance_sequential
	NoLoginMin      uint32        `yaml:"no_login_min"` // tokens without a login session per client per window
	HistoryMin      uint32        `yaml:"history_min"`  // issuances before caller networks count
	NetworkSeverity Severity      `yaml:"network_severity"`
	RateBucket      time.Duration `yaml:"rate_bucket"`
	RateFactor      float64       `yaml:"rate_factor"`
	RateMin         uint32        `yaml:"rate_min"`
}

// UnknownSubjectConfig configures unknown_subject_rate.
type UnknownSubjectConfig struct {
	Toggle   `yaml:",inline"`
	Window   time.Duration `yaml:"window"`
	MinCount uint32        `yaml:"min_count"`
	MinRatio float64       `yaml:"min_ratio"`
	Routes   []string      `yaml:"routes"` // subject-bound routes; empty: any event with a subject
}

// ForeignOriginConfig configures foreign_origin.
type ForeignOriginConfig struct {
	Toggle     `yaml:",inline"`
	Allowed    []string            `yaml:"allowed"`     // ISO 3166 codes; default KR
	Routes     map[string][]string `yaml:"routes"`      // per-route allowed set, overriding Allowed
	HistoryMin uint32              `yaml:"history_min"` // subject events before its history counts
	NoHistory  bool                `yaml:"no_history"`
}

// IPRotationConfig configures ip_rotation. Networks are /24 (IPv4) or /48 (IPv6).
type IPRotationConfig struct {
	Toggle         `yaml:",inline"`
	Window         time.Duration `yaml:"window"`
	PerToken       uint64        `yaml:"per_token"`
	PerSubject     uint64        `yaml:"per_subject"`
	PerFingerprint uint64        `yaml:"per_fingerprint"` // user agent + key id; 0 disables
}

// RouteVolumeConfig configures route_volume.
type RouteVolumeConfig struct {
	Toggle    `yaml:",inline"`
	Factor    float64 `yaml:"factor"`
	MinCount  uint32  `yaml:"min_count"`
	Alpha     float64 `yaml:"alpha"`
	MaxRoutes int     `yaml:"max_routes"`
}

// TokenWithoutLoginConfig configures token_without_login. It is active only
// once a login event has been fed with [Engine.Login].
type TokenWithoutLoginConfig struct {
	Toggle `yaml:",inline"`
	Grace  time.Duration `yaml:"grace"` // a login may be reported this late
}

// ContainPolicy says which containment actions a rule triggers: Action,
// or several in Actions. An action is taken only when the alert's evidence
// points at what it contains (see [ErrWeakEvidence]) and its kind is within
// its rate limit.
type ContainPolicy struct {
	Action  Action        `yaml:"action" json:"action,omitempty"`
	Actions []Action      `yaml:"actions" json:"actions,omitempty"`
	DryRun  bool          `yaml:"dry_run" json:"dry_run,omitempty"`
	For     time.Duration `yaml:"for" json:"for,omitempty"` // block_source and block_country duration, at most MaxBlockFor
}

// validate reports what is wrong with p.
func (p ContainPolicy) validate() error {
	acts := policyActions(p)
	if len(acts) == 0 {
		return errors.New("no action")
	}
	for _, a := range acts {
		if !a.valid() {
			return fmt.Errorf("unknown action %q", a)
		}
		if (a == ActionBlockSource || a == ActionBlockCountry) && (p.For <= 0 || p.For > MaxBlockFor) {
			return fmt.Errorf("%s needs a positive \"for\" of at most %s", a, MaxBlockFor)
		}
	}
	return nil
}

// ErrInvalidConfig is returned for a configuration that cannot run.
var ErrInvalidConfig = errors.New("invalid detection config")

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

func (c *Config) fill() {
	c.DedupWindow = cmp.Or(c.DedupWindow, DefaultDedupWindow)
	c.IncidentWindow = cmp.Or(c.IncidentWindow, DefaultIncidentWindow)
	c.MaxAlerts = cmp.Or(c.MaxAlerts, DefaultMaxAlerts)
	c.MaxIncidents = cmp.Or(c.MaxIncidents, DefaultMaxIncidents)
	c.MaxActions = cmp.Or(c.MaxActions, DefaultMaxActions)
	c.SampleIDs = cmp.Or(c.SampleIDs, DefaultSampleIDs)
	c.MaxKeys = cmp.Or(c.MaxKeys, DefaultMaxKeys)
	c.NotIssued.Severity = cmp.Or(c.NotIssued.Severity, Critical)
	c.ReportedNotIssued.Severity = cmp.Or(c.ReportedNotIssued.Severity, Medium)
	c.DecoySubject.Severity = cmp.Or(c.DecoySubject.Severity, Critical)
	c.RevokedKey.Severity = cmp.Or(c.RevokedKey.Severity, Critical)
	c.DepartedCred.Severity = cmp.Or(c.DepartedCred.Severity, Critical)

	e := &c.Enumeration
	e.Severity = cmp.Or(e.Severity, High)
	e.Window = cmp.Or(e.Window, DefaultEnumerationWindow)
	e.Threshold = cmp.Or(e.Threshold, DefaultEnumerationThreshold)
	e.PerNetwork = cmp.Or(e.PerNetwork, DefaultEnumerationPerNet)
	e.WalkGap = cmp.Or(e.WalkGap, DefaultWalkGap)
	e.WalkRun = cmp.Or(e.WalkRun, DefaultWalkRun)
	cv := &c.IDCoverage
	cv.Severity = cmp.Or(cv.Severity, High)
	cv.Window = cmp.Or(cv.Window, DefaultCoverageWindow)
	cv.Block = cmp.Or(cv.Block, DefaultCoverageBlock)
	cv.Threshold = cmp.Or(cv.Threshold, DefaultCoverageThreshold)
	fs := &c.ForeignSpread
	fs.Severity = cmp.Or(fs.Severity, High)
	fs.Window = cmp.Or(fs.Window, DefaultSpreadWindow)
	fs.Threshold = cmp.Or(fs.Threshold, DefaultSpreadThreshold)
	is := &c.Issuance
	is.Severity = cmp.Or(is.Severity, High)
	is.NetworkSeverity = cmp.Or(is.NetworkSeverity, Medium)
	is.Window = cmp.Or(is.Window, DefaultIssuanceWindow)
	is.RateBucket = cmp.Or(is.RateBucket, DefaultIssuanceRateBucket)
	is.NoLoginMin = cmp.Or(is.NoLoginMin, DefaultIssuanceNoLoginMin)
	is.HistoryMin = cmp.Or(is.HistoryMin, DefaultIssuanceHistoryMin)
	is.RateFactor = cmp.Or(is.RateFactor, DefaultIssuanceRateFactor)
	is.RateMin = cmp.Or(is.RateMin, DefaultIssuanceRateMin)
	u := &c.UnknownSubject
	u.Severity = cmp.Or(u.Severity, High)
	u.Window = cmp.Or(u.Window, DefaultUnknownWindow)
	u.MinCount = cmp.Or(u.MinCount, DefaultUnknownMinCount)
	u.MinRatio = cmp.Or(u.MinRatio, DefaultUnknownMinRatio)
	f := &c.ForeignOrigin
	f.Severity = cmp.Or(f.Severity, Medium)
	if len(f.Allowed) == 0 {
		f.Allowed = []string{"KR"}
	}
	f.HistoryMin = cmp.Or(f.HistoryMin, DefaultForeignHistoryMin)
	r := &c.IPRotation
	r.Severity = cmp.Or(r.Severity, Medium)
	r.Window = cmp.Or(r.Window, DefaultRotationWindow)
	r.PerToken = cmp.Or(r.PerToken, DefaultRotationPerToken)
	r.PerSubject = cmp.Or(r.PerSubject, DefaultRotationPerSubject)
	v := &c.RouteVolume
	v.Severity = cmp.Or(v.Severity, Medium)
	v.Factor = cmp.Or(v.Factor, DefaultVolumeFactor)
	v.MinCount = cmp.Or(v.MinCount, DefaultVolumeMinCount)
	v.Alpha = cmp.Or(v.Alpha, DefaultVolumeAlpha)
	v.MaxRoutes = cmp.Or(v.MaxRoutes, DefaultVolumeMaxRoute)
	t := &c.TokenWithoutLogin
	t.Severity = cmp.Or(t.Severity, High)
	t.Grace = cmp.Or(t.Grace, DefaultLoginGrace)
}

// Validate reports every field that cannot run, naming it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, a...)))
	}
	pos := func(field string, d time.Duration) {
		if d < time.Second {
			bad(field, "must be at least 1s, got %s", d)
		}
	}
	pos("dedup_window", c.DedupWindow)
	pos("incident_window", c.IncidentWindow)
	pos("enumeration.window", c.Enumeration.Window)
	pos("unknown_subject_rate.window", c.UnknownSubject.Window)
	pos("ip_rotation.window", c.IPRotation.Window)
	pos("id_coverage.window", c.IDCoverage.Window)
	pos("foreign_spread.window", c.ForeignSpread.Window)
	pos("issuance.window", c.Issuance.Window)
	pos("issuance.rate_bucket", c.Issuance.RateBucket)
	if c.Issuance.RateFactor <= 1 {
		bad("issuance.rate_factor", "must be above 1, got %v", c.Issuance.RateFactor)
	}
	for name, n := range map[string]int{"max_alerts": c.MaxAlerts, "max_incidents": c.MaxIncidents,
		"max_actions": c.MaxActions, "sample_ids": c.SampleIDs, "max_keys": c.MaxKeys,
		"route_volume.max_routes": c.RouteVolume.MaxRoutes} {
		if n < 1 {
			bad(name, "must be positive, got %d", n)
		}
	}
	for name, s := range map[string]Severity{"not_issued": c.NotIssued.Severity, "reported_not_issued": c.ReportedNotIssued.Severity, "decoy_subject": c.DecoySubject.Severity,
		"revoked_or_retired_key": c.RevokedKey.Severity, "departed_credential_use": c.DepartedCred.Severity,
		"enumeration": c.Enumeration.Severity, "unknown_subject_rate": c.UnknownSubject.Severity,
		"foreign_origin": c.ForeignOrigin.Severity, "ip_rotation": c.IPRotation.Severity,
		"route_volume": c.RouteVolume.Severity, "token_without_login": c.TokenWithoutLogin.Severity,
		"id_coverage": c.IDCoverage.Severity, "foreign_spread": c.ForeignSpread.Severity, "issuance": c.Issuance.Severity, "issuance.network_severity": c.Issuance.NetworkSeverity} {
		if !s.valid() {
			bad(name+".severity", "unknown severity %q", s)
		}
	}
	if c.UnknownSubject.MinRatio < 0 || c.UnknownSubject.MinRatio > 1 {
		bad("unknown_subject_rate.min_ratio", "must be within [0,1], got %v", c.UnknownSubject.MinRatio)
	}
	if c.RouteVolume.Factor <= 1 {
		bad("route_volume.factor", "must be above 1, got %v", c.RouteVolume.Factor)
	}
	if c.RouteVolume.Alpha <= 0 || c.RouteVolume.Alpha > 1 {
		bad("route_volume.alpha", "must be within (0,1], got %v", c.RouteVolume.Alpha)
	}
	if c.IDCoverage.Threshold > c.IDCoverage.Block {
		bad("id_coverage.threshold", "must be at most the block (%d IDs), got %d", c.IDCoverage.Block, c.IDCoverage.Threshold)
	}
	if c.ForeignSpread.Threshold > MaxSpreadThreshold {
		bad("foreign_spread.threshold", "must be at most %d, got %d", MaxSpreadThreshold, c.ForeignSpread.Threshold)
	}
	if c.Enumeration.WalkGap < 1 {
		bad("enumeration.walk_gap", "must be positive, got %d", c.Enumeration.WalkGap)
	}
	for rule, p := range c.Containment {
		if err := p.validate(); err != nil {
			bad("containment."+rule, "%v", err)
		}
	}
	for a, l := range c.ContainmentLimits {
		if !a.valid() {
			bad("containment_limits", "unknown action %q", a)
		}
		if l.Max < 0 || l.Per < 0 {
			bad("containment_limits."+string(a), "max and per must not be negative")
		}
	}
	return errors.Join(errs...)
}

// netOf returns the /24 (IPv4) or /48 (IPv6) network of ip.
func netOf(ip netip.Addr) netip.Prefix {
	if ip.Is4() || ip.Is4In6() {
		p, _ := ip.Unmap().Prefix(24)
		return p
	}
	p, _ := ip.Prefix(48)
	return p
}
