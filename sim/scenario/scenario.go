// Package scenario generates the Coupang 2025 replay's traffic: customers' normal
// traffic and the forged-token attack, as one deterministic, time-ordered stream.
package scenario

import (
	"math"
	"net/netip"
	"strconv"
	"time"

	"github.com/custos-dev/custos/shop"
)

// Kind says who sends a request.
type Kind uint8

const (
	Normal      Kind = iota // a customer, after a login
	AttackTest              // the attacker's tests with a forged token, before the crawl
	AttackCrawl             // the crawl with forged tokens
)

func (k Kind) String() string {
	switch k {
	case AttackTest:
		return "attack_test"
	case AttackCrawl:
		return "attack_crawl"
	}
	return "normal"
}

// Attack reports whether the request is the attacker's.
func (k Kind) Attack() bool { return k != Normal }

// TokenKind says where a request's bearer token came from.
type TokenKind uint8

const (
	IssuedByLogin TokenKind = iota // issued by the authority after a login
	Forged                         // signed with the stolen key, never issued
	// IssuedStolenSecret is a real, ledgered token the authority issued to
	// whoever presented the login service's stolen client secret: no login
	// session behind it.
	IssuedStolenSecret
	// Replayed is a customer's real token, copied and replayed by someone else.
	Replayed
)

func (t TokenKind) String() string {
	switch t {
	case Forged:
		return "forged"
	case IssuedStolenSecret:
		return "issued_stolen_secret"
	case Replayed:
		return "replayed"
	}
	return "issued_by_login"
}

// Request is one request of the stream. All strings are safe to keep.
type Request struct {
	Seq       uint64 // 1-based position in the stream
	ID        string // the request ID: "r" and Seq in decimal
	Time      time.Time
	SrcIP     netip.Addr
	Addr      string // SrcIP as text
	Country   string // ISO 3166 alpha-2 of SrcIP
	ASN       uint32 // autonomous system of SrcIP
	UserAgent string
	Method    string // always GET
	Route     string // the route pattern (shop.Route*)
	Path      string
	Member    string // the subject: the {member} path parameter
	MemberID  uint64 // Member as a number
	Address   int    // address-book entry on the edit route, -1 elsewhere
	Exists    bool   // the member ID has an account (a customer or a decoy)
	Decoy     bool   // the account is a decoy
	Status    int    // what the sample shop answers: 200, or 404
	Kind      Kind
	Token     TokenKind
	// TokenID identifies the bearer token, stable across the requests that reuse
	// it (a login session's token; the crawler's token for one member ID). Use it
	// as the jti when minting the token in HTTP mode.
	TokenID   string
	SessionID string // the login session; empty for forged tokens
	Login     bool   // a login through the authority precedes this request
}

// Timeline is the scenario's key moments, simulated and historical.
type Timeline struct {
	CustodianHired  time.Time `json:"custodian_hired"`
	KeyCreated      time.Time `json:"key_created"`
	CustodianLeaves time.Time `json:"custodian_leaves"`
	FirstForged     time.Time `json:"first_forged"` // the stream's first attack request
	CrawlStart      time.Time `json:"crawl_start"`
	CrawlEnd        time.Time `json:"crawl_end"`
	// Awareness and Revoked are historical: the company learnt of the breach
	// from the attacker's own e-mails, then revoked the key.
	Awareness time.Time `json:"awareness"`
	Revoked   time.Time `json:"revoked"`
}

// Scenario is one stream of requests. It is not safe for concurrent use.
//
// The stream is pure and deterministic for a [Config] (same seed, same
// requests), and streaming: [Scenario.Next] computes each request when asked
// by merging a handful of time-ordered generators, so a full-scale run of 250
// million requests needs a few kilobytes. Defaults come from the scenario file
// (scenario/coupang-2025.md); the population and its personal data are the
// sample shop's ([shop.Population]).
type Scenario struct {
	cfg     Config
	vol     Volumes
	pop     shop.Population
	tl      Timeline
	srcs    []source
	times   []int64 // srcs[i].next(), cached
	heap    []int
	emitted uint64
	ids     arena // request IDs
}

// source generates one time-ordered sub-stream.
type source interface {
	next() int64     // Unix nanoseconds of the next request; math.MaxInt64 when done
	fill(r *Request) // writes the next request and advances
}

// New builds the stream for cfg.
func New(cfg Config) (*Scenario, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scenario{cfg: cfg}
	s.pop = shop.Population{
		Members: cfg.scaled(cfg.Members),
		Missing: cfg.scaled(cfg.MissingIDs),
		Decoys:  cfg.Decoys,
		Seed:    cfg.Seed,
	}
	if err := s.pop.Validate(); err != nil {
		return nil, err
	}
	s.vol = Volumes{
		Members:      s.pop.Members,
		MissingIDs:   s.pop.Missing,
		Decoys:       s.pop.Decoys,
		Tests:        cfg.Tests,
		Profile:      cfg.scaled(cfg.Profile),
		AddressList:  cfg.scaled(cfg.AddressList),
		AddressEdit:  cfg.scaled(cfg.AddressEdit),
		Orders:       cfg.scaled(cfg.Orders),
		NormalPerDay: cfg.scaled(cfg.NormalPerDay),
	}
	if cfg.Profile == 0 {
		s.vol.Profile = s.pop.Members
	}
	// Walking the ID space in order until Profile members were seen: whole
	// passes, then up to the last member needed.
	full, rem := s.vol.Profile/s.pop.Members, s.vol.Profile%s.pop.Members
	s.vol.ProfileTotal = full * s.pop.IDSpace()
	if rem > 0 {
		s.vol.ProfileTotal += s.pop.MemberID(rem)
	}

	a := newAttacker(cfg)
	crawl := func(tag uint64, page int, mode walk, total uint64) *crawler {
		return newCrawler(cfg, s.pop, a, tag, page, mode, cfg.CrawlStart, cfg.CrawlEnd, total)
	}
	if v := cfg.AttackerVariant(); v != StolenKey {
		s.vol.Tests, s.vol.AddressList, s.vol.AddressEdit, s.vol.Orders = 0, 0, 0, 0
		if v == ReplayedTokens {
			s.vol.Profile = cfg.scaled(cfg.ReplayedTokens)
			s.vol.ProfileTotal = s.vol.Profile
		}
		s.srcs = []source{newVariant(cfg, s.pop, a, v, s.vol.ProfileTotal), newNormal(cfg, s.pop, s.vol.NormalPerDay)}
	} else {
		s.srcs = []source{
			newTests(cfg, s.pop, a),
			crawl(tagProfile, pageProfile, walkAll, s.vol.ProfileTotal),
			crawl(tagAddresses, pageAddresses, walkExisting, s.vol.AddressList),
			crawl(tagEdit, pageEdit, randomExisting, s.vol.AddressEdit),
			crawl(tagOrders, pageOrders, randomExisting, s.vol.Orders),
			newNormal(cfg, s.pop, s.vol.NormalPerDay),
		}
	}
	first := int64(math.MaxInt64)
	for _, src := range s.srcs[:len(s.srcs)-1] {
		first = min(first, src.next())
	}
	s.tl = Timeline{
		CustodianHired:  cfg.CustodianHired,
		KeyCreated:      cfg.KeyCreated,
		CustodianLeaves: cfg.CustodianLeaves,
		CrawlStart:      cfg.CrawlStart,
		CrawlEnd:        cfg.CrawlEnd,
		Awareness:       History().Awareness,
		Revoked:         History().KeyRevoked,
	}
	if first != math.MaxInt64 {
		s.tl.FirstForged = time.Unix(0, first).In(KST)
	}
	s.heap = make([]int, 0, len(s.srcs))
	s.times = make([]int64, len(s.srcs))
	for i, src := range s.srcs {
		s.times[i] = src.next()
		s.push(i)
	}
	return s, nil
}

// Config returns the scenario's configuration.
func (s *Scenario) Config() Config { return s.cfg }

// Volumes returns the scaled counts the stream is built from.
func (s *Scenario) Volumes() Volumes { return s.vol }

// Population returns the sample shop population the stream addresses.
func (s *Scenario) Population() shop.Population { return s.pop }

// Timeline returns the key moments.
func (s *Scenario) Timeline() Timeline { return s.tl }

// Historical returns the published figures of the breach.
func (s *Scenario) Historical() Historical { return History() }

// Emitted returns how many requests Next has returned.
func (s *Scenario) Emitted() uint64 { return s.emitted }

// Expected returns about how many requests the stream holds (exact for the
// attack, the mean for normal traffic), for progress display.
func (s *Scenario) Expected() uint64 {
	n := s.vol.Attack()
	if s.vol.NormalPerDay > 0 {
		days := s.cfg.NormalEnd.Sub(s.cfg.NormalStart).Hours() / 24
		n += uint64(days * float64(s.vol.NormalPerDay))
	}
	return n
}

// Networks returns the address blocks the stream sends from: the crawler's
// rotating /24s and the domestic networks of the customers.
func (s *Scenario) Networks() []Network {
	out := make([]Network, 0, s.cfg.AttackNetworks+len(domesticNets))
	for j := range s.cfg.AttackNetworks {
		a, b := attacker24(j)
		out = append(out, Network{Prefix: netip.PrefixFrom(a, 24), Country: b.country, ASN: b.asn, Attacker: true})
	}
	for _, b := range domesticNets {
		out = append(out, Network{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{b.a, b.b, 0, 0}), 16), Country: b.country, ASN: b.asn})
	}
	return out
}

// Next returns the next request in time order, and false when the stream is over.
func (s *Scenario) Next() (Request, bool) {
	var r Request
	ok := s.NextInto(&r)
	return r, ok
}

// NextInto is Next writing into r, for callers that reuse one Request.
func (s *Scenario) NextInto(r *Request) bool {
	if len(s.heap) == 0 {
		return false
	}
	i := s.heap[0]
	if s.times[i] == math.MaxInt64 {
		return false
	}
	src := s.srcs[i]
	src.fill(r) // sets every field but Seq
	s.times[i] = src.next()
	s.emitted++
	r.Seq = s.emitted
	var b [24]byte
	r.ID = s.ids.str(strconv.AppendUint(append(b[:0], 'r'), r.Seq, 10))
	s.down(0)
	return true
}

func (s *Scenario) less(a, b int) bool {
	ta, tb := s.times[s.heap[a]], s.times[s.heap[b]]
	return ta < tb || (ta == tb && s.heap[a] < s.heap[b])
}

func (s *Scenario) push(i int) {
	s.heap = append(s.heap, i)
	for j := len(s.heap) - 1; j > 0; {
		p := (j - 1) / 2
		if !s.less(j, p) {
			break
		}
		s.heap[j], s.heap[p] = s.heap[p], s.heap[j]
		j = p
	}
}

func (s *Scenario) down(j int) {
	n := len(s.heap)
	for {
		l := 2*j + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, j) {
			return
		}
		s.heap[j], s.heap[m] = s.heap[m], s.heap[j]
		j = m
	}
}
