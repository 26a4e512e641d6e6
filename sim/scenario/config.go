package scenario

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// KST is Korea Standard Time (UTC+9, no daylight saving), the zone of every
// date in the scenario file.
var KST = time.FixedZone("KST", 9*60*60)

func kst(y int, m time.Month, d, hh, mm int) time.Time {
	return time.Date(y, m, d, hh, mm, 0, 0, KST)
}

// Defaults at scale 1, from the scenario file (scenario/coupang-2025.md, named in docs/DESIGN.md).
const (
	DefaultMembers     = 33_700_000  // accounts disclosed
	DefaultMissingIDs  = 44_000_000  // tokens minted for member IDs that did not exist
	DefaultDecoys      = 64          // decoy accounts; not scaled
	DefaultTests       = 1_000       // test requests before the crawl; not scaled
	DefaultAddressList = 148_000_000 // delivery address list accesses (upper figure)
	DefaultAddressEdit = 50_000      // delivery address edit accesses
	DefaultOrders      = 100_000     // order history accesses
	// DefaultNormalPerDay is normal page views per simulated day at scale 1: with
	// the 233-day normal window it adds about 23 million requests to the 226
	// million of the attack, so the whole stream at scale 1 stays within the
	// events-mode budget.
	DefaultNormalPerDay   = 100_000
	DefaultNormalNotFound = 0.005 // share of normal page views answered 404
	DefaultAttackNetworks = 512   // foreign /24 networks the crawler rotates through
	DefaultRotateEvery    = 100   // requests sent from one address before rotating
)

// ErrConfig reports an unusable configuration; the message names the field.
var ErrConfig = errors.New("invalid scenario config")

// Config is the replay's scenario. Counts are figures at scale 1 and are
// multiplied by Scale, except Decoys and Tests. The zero value of a field is
// not a default: start from [DefaultConfig].
type Config struct {
	Seed  uint64  `json:"seed"`
	Scale float64 `json:"scale"`

	Members    uint64 `json:"members"`     // customers, IDs spread through the ID space
	MissingIDs uint64 `json:"missing_ids"` // IDs in the space without a customer
	Decoys     uint64 `json:"decoys"`      // decoy accounts placed among the missing IDs

	CustodianHired  time.Time `json:"custodian_hired"`
	KeyCreated      time.Time `json:"key_created"`
	CustodianLeaves time.Time `json:"custodian_leaves"`

	TestsStart time.Time `json:"tests_start"` // first forged request
	Tests      uint64    `json:"tests"`       // forged test requests between TestsStart and CrawlStart
	CrawlStart time.Time `json:"crawl_start"`
	CrawlEnd   time.Time `json:"crawl_end"`

	// Profile is the crawl's my-information requests for existing accounts;
	// 0 means one pass over the population. The crawl walks the ID space in
	// order, so every missing ID it passes costs one more (404) request.
	Profile     uint64 `json:"profile"`
	AddressList uint64 `json:"address_list"`
	AddressEdit uint64 `json:"address_edit"`
	Orders      uint64 `json:"orders"`

	AttackNetworks int    `json:"attack_networks"`
	RotateEvery    uint64 `json:"rotate_every"`

	NormalStart    time.Time `json:"normal_start"`
	NormalEnd      time.Time `json:"normal_end"`
	NormalPerDay   uint64    `json:"normal_per_day"`
	NormalNotFound float64   `json:"normal_not_found"`

	// Attacker is the variant (empty: StolenKey); the fields after it are the
	// variants' parameters (see [Variant]).
	Attacker           Variant       `json:"attacker"`
	AttackRate         float64       `json:"attack_rate"`
	DistributedSources int           `json:"distributed_sources"`
	MembersPerSource   uint64        `json:"members_per_source"`
	SlowSources        int           `json:"slow_sources"`
	SlowEvery          time.Duration `json:"slow_every"`
	ReplayedTokens     uint64        `json:"replayed_tokens"`
	// AttackDomestic: stolen-client-secret and replayed-tokens send from
	// AttackNetworks domestic sources instead of overseas networks.
	AttackDomestic bool `json:"attack_domestic"`
}

// DefaultConfig returns the scenario of the scenario file at scale 1, seed 1.
func DefaultConfig() Config {
	return Config{
		Seed:            1,
		Scale:           1,
		Members:         DefaultMembers,
		MissingIDs:      DefaultMissingIDs,
		Decoys:          DefaultDecoys,
		CustodianHired:  kst(2022, time.November, 16, 9, 0),
		KeyCreated:      kst(2024, time.May, 2, 14, 0),
		CustodianLeaves: kst(2025, time.January, 1, 0, 0),
		TestsStart:      kst(2025, time.April, 14, 10, 0),
		Tests:           DefaultTests,
		CrawlStart:      kst(2025, time.June, 24, 0, 0),
		CrawlEnd:        kst(2025, time.November, 8, 0, 0),
		AddressList:     DefaultAddressList,
		AddressEdit:     DefaultAddressEdit,
		Orders:          DefaultOrders,
		AttackNetworks:  DefaultAttackNetworks,
		RotateEvery:     DefaultRotateEvery,
		NormalStart:     kst(2025, time.April, 1, 0, 0),
		NormalEnd:       kst(2025, time.November, 20, 0, 0),
		NormalPerDay:    DefaultNormalPerDay,
		NormalNotFound:  DefaultNormalNotFound,

		Attacker:           StolenKey,
		AttackRate:         DefaultAttackRate,
		DistributedSources: DefaultDistributedSources,
		MembersPerSource:   DefaultMembersPerSource,
		SlowSources:        DefaultSlowSources,
		SlowEvery:          DefaultSlowEvery,
		ReplayedTokens:     DefaultReplayedTokens,
	}
}

// Validate checks the configuration as a whole.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	switch {
	case !(c.Scale > 0) || math.IsInf(c.Scale, 0):
		return bad("scale", "must be positive")
	case c.scaled(c.Members) == 0:
		return bad("members", "must be positive")
	case c.Decoys > c.scaled(c.MissingIDs):
		return bad("decoys", "exceed the scaled missing IDs")
	case !c.KeyCreated.After(c.CustodianHired):
		return bad("key_created", "must be after custodian_hired")
	case !c.CustodianLeaves.After(c.KeyCreated):
		return bad("custodian_leaves", "must be after key_created")
	case c.TestsStart.Before(c.KeyCreated):
		return bad("tests_start", "must not be before key_created")
	case c.CrawlStart.Before(c.TestsStart):
		return bad("crawl_start", "must not be before tests_start")
	case !c.CrawlEnd.After(c.CrawlStart):
		return bad("crawl_end", "must be after crawl_start")
	case c.NormalPerDay > 0 && !c.NormalEnd.After(c.NormalStart):
		return bad("normal_end", "must be after normal_start")
	case c.NormalNotFound < 0 || c.NormalNotFound > normalShare[pageEdit]:
		return bad("normal_not_found", fmt.Sprintf("must be in [0, %g]", normalShare[pageEdit]))
	case c.AttackNetworks < 1 || c.AttackNetworks > len(attackerNets)*256:
		return bad("attack_networks", fmt.Sprintf("must be in [1, %d]", len(attackerNets)*256))
	case c.RotateEvery == 0:
		return bad("rotate_every", "must be positive")
	}
	return c.validateVariant()
}

// scaled multiplies a scale-1 count by Scale, rounding, and keeps a positive
// count positive.
func (c Config) scaled(v uint64) uint64 {
	if v == 0 {
		return 0
	}
	s := uint64(math.Round(float64(v) * c.Scale))
	if s == 0 {
		s = 1
	}
	return s
}

// Volumes are the effective counts of a scenario after scaling.
type Volumes struct {
	Members      uint64 `json:"members"`
	MissingIDs   uint64 `json:"missing_ids"`
	Decoys       uint64 `json:"decoys"`
	Tests        uint64 `json:"tests"`
	Profile      uint64 `json:"profile"`       // crawl profile requests for members (decoys excluded)
	ProfileTotal uint64 `json:"profile_total"` // crawl profile requests, missing IDs and decoys included
	AddressList  uint64 `json:"address_list"`
	AddressEdit  uint64 `json:"address_edit"`
	Orders       uint64 `json:"orders"`
	NormalPerDay uint64 `json:"normal_per_day"`
}

// Attack is the number of forged requests the scenario sends.
func (v Volumes) Attack() uint64 {
	return v.Tests + v.ProfileTotal + v.AddressList + v.AddressEdit + v.Orders
}
