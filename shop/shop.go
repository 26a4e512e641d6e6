// Package shop is the built-in sample shop upstream: the replay's four customer-data
// routes, answering fake but consistent personal data hashed from (seed, member ID).
package shop

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
)

// Route patterns of the sample shop. The subject sits in the {member} path parameter.
const (
	RouteProfile     = "/api/members/{member}/profile"
	RouteAddresses   = "/api/members/{member}/addresses"
	RouteAddressEdit = "/api/members/{member}/addresses/{addr}/edit"
	RouteOrders      = "/api/members/{member}/orders"

	// SubjectParam is the path parameter holding the route's data subject.
	SubjectParam = "member"

	// NonMemberPrefix starts the subject ID of an address-book recipient who is
	// not a member ("nm-<owner>-<k>").
	NonMemberPrefix = "nm-"
)

// Route is one customer-data route as the gateway is configured with it.
type Route struct {
	Pattern      string   `json:"pattern" yaml:"pattern"`
	DataClasses  []string `json:"data_classes" yaml:"data_classes"`
	SubjectParam string   `json:"subject_param" yaml:"subject_param"`
}

// Routes returns the sample shop's four routes (all GET), in a fresh slice.
func Routes() []Route {
	return []Route{
		{Pattern: RouteProfile, DataClasses: []string{event.ClassName, event.ClassEmail}, SubjectParam: SubjectParam},
		{Pattern: RouteAddresses, DataClasses: []string{event.ClassName, event.ClassPhone, event.ClassAddress}, SubjectParam: SubjectParam},
		{Pattern: RouteAddressEdit, DataClasses: []string{event.ClassName, event.ClassPhone, event.ClassEntranceCode}, SubjectParam: SubjectParam},
		{Pattern: RouteOrders, DataClasses: []string{event.ClassOrderHistory}, SubjectParam: SubjectParam},
	}
}

// Kind says what a member ID is.
type Kind uint8

const (
	Missing Kind = iota // no account: the shop answers 404
	Member              // a real customer
	Decoy               // a decoy account: answers like a member, belongs to nobody
)

func (k Kind) String() string {
	switch k {
	case Member:
		return "member"
	case Decoy:
		return "decoy"
	}
	return "missing"
}

// ErrPopulation reports an unusable population.
var ErrPopulation = errors.New("invalid population")

// Population describes the shop's member ID space: IDs 1..Members+Missing, of
// which exactly Members are customers, spread evenly through the space, and the
// rest gaps; Decoys of the gaps are decoy accounts, also spread evenly, that
// answer like real ones and belong to nobody.
//
// Nothing is stored: every name, phone number, address book and order is
// computed from a hash of (Seed, ID), so tens of millions of members cost no memory.
type Population struct {
	Members uint64 `json:"members"` // real customers
	Missing uint64 `json:"missing"` // IDs in the space with no customer (decoys included)
	Decoys  uint64 `json:"decoys"`  // decoy accounts among the missing IDs
	Seed    uint64 `json:"seed"`    // seeds every generated value
}

// Validate checks the population is usable.
func (p Population) Validate() error {
	switch {
	case p.Members == 0:
		return fmt.Errorf("%w: members must be positive", ErrPopulation)
	case p.Decoys > p.Missing:
		return fmt.Errorf("%w: decoys (%d) exceed missing IDs (%d)", ErrPopulation, p.Decoys, p.Missing)
	case p.Members+p.Missing < p.Members:
		return fmt.Errorf("%w: ID space overflows", ErrPopulation)
	}
	return nil
}

// IDSpace is the highest member ID; IDs above it do not exist.
func (p Population) IDSpace() uint64 { return p.Members + p.Missing }

// mulDiv returns floor(a*b/c) without overflow (c > 0, result < 2^64).
func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	q, _ := bits.Div64(hi, lo, c) // callers keep a*b/c below 2^64, so hi < c
	return q
}

// memberRank is the number of members with an ID <= id.
func (p Population) memberRank(id uint64) uint64 { return mulDiv(id, p.Members, p.IDSpace()) }

// Kind classifies a member ID.
func (p Population) Kind(id uint64) Kind {
	n := p.IDSpace()
	if id == 0 || id > n {
		return Missing
	}
	if p.memberRank(id) > p.memberRank(id-1) {
		return Member
	}
	if p.Decoys == 0 {
		return Missing
	}
	g := id - p.memberRank(id) // 1-based index among the gaps
	if mulDiv(g, p.Decoys, p.Missing) > mulDiv(g-1, p.Decoys, p.Missing) {
		return Decoy
	}
	return Missing
}

// Exists reports whether the shop answers for id (a member or a decoy).
func (p Population) Exists(id uint64) bool { return p.Kind(id) != Missing }

// MemberID returns the ID of the i-th member (1-based, i <= Members).
func (p Population) MemberID(i uint64) uint64 {
	// smallest id with floor(id*M/N) >= i, i.e. ceil(i*N/M)
	n, m := p.IDSpace(), p.Members
	hi, lo := bits.Mul64(i, n)
	q, r := bits.Div64(hi, lo, m)
	if r != 0 {
		q++
	}
	return q
}

// ParseMember parses a member ID as it appears in a path: canonical decimal, no
// sign, no leading zeros.
func ParseMember(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return id, true
}

// Walker visits the ID space in order, classifying each ID without division:
// the sequential enumeration the breach's crawler performed.
type Walker struct {
	p                 Population
	id, rem, gaps, dr uint64
}

// Walk returns a Walker positioned before ID 1.
func (p Population) Walk() *Walker { return &Walker{p: p} }

// Next moves to the next ID, back to 1 after the last, and returns it with its kind.
func (w *Walker) Next() (uint64, Kind) {
	if w.id == w.p.IDSpace() {
		*w = Walker{p: w.p}
	}
	w.id++
	// rem tracks id*Members mod IDSpace: a wrap means the member rank grew.
	w.rem += w.p.Members
	if n := w.p.IDSpace(); w.rem >= n {
		w.rem -= n
		return w.id, Member
	}
	w.gaps++
	if w.p.Decoys == 0 {
		return w.id, Missing
	}
	w.dr += w.p.Decoys
	if w.dr >= w.p.Missing {
		w.dr -= w.p.Missing
		return w.id, Decoy
	}
	return w.id, Missing
}

// Configure puts the shop behind custos's gateway in c: its routes (with
// their data classes and subject parameter), its decoy members, and
// upstream as the gateway's upstream.
func Configure(c *config.Config, pop Population, upstream string) {
	c.Gateway.Upstream = upstream
	c.Gateway.Routes = c.Gateway.Routes[:0]
	for _, r := range Routes() {
		c.Gateway.Routes = append(c.Gateway.Routes, config.Route{Pattern: "GET " + r.Pattern, DataClasses: r.DataClasses, SubjectParam: r.SubjectParam})
	}
	for id := uint64(1); id <= pop.IDSpace(); id++ {
		if pop.Kind(id) == Decoy {
			c.Decoys = append(c.Decoys, strconv.FormatUint(id, 10))
		}
	}
}
