package sim

import (
	"time"

	"math/bits"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/sim/scenario"
)

// bitset is a fixed-size set of small integers.
type bitset []uint64

func newBitset(n uint64) bitset { return make(bitset, (n+63)/64) }

// add sets bit i and reports whether it was clear.
func (b bitset) add(i uint64) bool {
	w, m := i/64, uint64(1)<<(i%64)
	if b[w]&m != 0 {
		return false
	}
	b[w] |= m
	return true
}

func (b bitset) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// Exposure counts what answers served to the attacker exposed: exact sets of
// members and non-members (bitsets over the ID space: 3 bits per member ID,
// 29 MB at scale 1) and records per data class.
type Exposure struct {
	pop        shop.Population
	members    bitset
	nonMembers bitset // owner*MaxNonMembers + k-1
	nMembers   int64
	nNon       int64
	counts     [6]int64 // records, indexed by the c* constants

}

const (
	cName = iota
	cEmail
	cPhone
	cAddress
	cEntrance
	cOrders
)

// NewExposure returns an empty exposure over pop.
func NewExposure(pop shop.Population) *Exposure {
	n := pop.IDSpace() + 1
	return &Exposure{pop: pop, members: newBitset(n), nonMembers: newBitset(n * shop.MaxNonMembers)}
}

func (e *Exposure) member(id uint64) {
	if e.members.add(id) {
		e.nMembers++
	}
}

func (e *Exposure) nonMember(owner uint64, k int) {
	if e.nonMembers.add(owner*shop.MaxNonMembers + uint64(k-1)) {
		e.nNon++
	}
}

// Add records the answer to r as exposed: call it for each request whose
// answer reached the attacker. Answers that were not found, and decoys'
// answers (nobody's data), expose nothing.
func (e *Exposure) Add(r *scenario.Request) {
	if r.Status != 200 || r.Decoy || !r.Exists {
		return
	}
	id := r.MemberID
	switch r.Route {
	case shop.RouteProfile:
		e.member(id)
		e.counts[cName]++
		e.counts[cEmail]++
	case shop.RouteOrders:
		e.member(id)
		e.counts[cOrders]++
	case shop.RouteAddresses:
		other, nm := e.pop.Shape(id)
		n := int64(1 + nm)
		e.member(id)
		if other != 0 {
			e.member(other)
			n++
		}
		for k := 1; k <= nm; k++ {
			e.nonMember(id, k)
		}
		e.counts[cName] += n
		e.counts[cPhone] += n
		e.counts[cAddress] += n
	case shop.RouteAddressEdit:
		other, nm := e.pop.Shape(id)
		a := r.Address
		switch {
		case a == 0:
			e.member(id)
		case other != 0 && a == 1:
			e.member(other)
		default:
			k := a
			if other != 0 {
				k--
			}
			if k < 1 || k > nm {
				return // not an entry: the shop answered 404
			}
			e.nonMember(id, k)
		}
		e.counts[cName]++
		e.counts[cPhone]++
		e.counts[cEntrance]++
	}
}

// Fill writes the exposure into w.
func (e *Exposure) Fill(w *World) {
	w.MembersExposed, w.NonMembersExposed = e.nMembers, e.nNon
	w.SubjectsExposed = e.nMembers + e.nNon
	w.Records = map[string]int64{
		event.ClassName: e.counts[cName], event.ClassEmail: e.counts[cEmail],
		event.ClassPhone: e.counts[cPhone], event.ClassAddress: e.counts[cAddress],
		event.ClassEntranceCode: e.counts[cEntrance], event.ClassOrderHistory: e.counts[cOrders],
	}
}

// Baseline is the breached design: a long-lived key with no custodian link,
// never rotated; a gateway that serves any token whose signature verifies; no
// detection. The key dies when it was historically revoked, after the
// attacker's own e-mails alerted the company.
type Baseline struct {
	tl       scenario.Timeline
	hist     scenario.Historical
	exposure *Exposure
	variant  scenario.Variant
	sent     int64
	served   int64
	normal   int64
}

var _ Observer = (*Baseline)(nil)

// NewBaseline returns the baseline world for s.
func NewBaseline(s *scenario.Scenario) *Baseline {
	return &Baseline{tl: s.Timeline(), hist: s.Historical(), exposure: NewExposure(s.Population()), variant: s.Config().AttackerVariant()}
}

// Observe serves r as a signature-only gateway would.
func (b *Baseline) Observe(r *scenario.Request) {
	if !r.Kind.Attack() {
		b.normal++
		return
	}
	b.sent++
	if r.Token == scenario.Forged && !r.Time.Before(b.tl.Revoked) {
		return // the key is revoked: the signature no longer verifies
	}
	b.served++
	b.exposure.Add(r)
}

// World returns the baseline's outcome so far.
func (b *Baseline) World() World {
	w := World{
		Name:           "baseline",
		KeyDied:        b.tl.Revoked,
		FirstAlert:     b.tl.Awareness,
		AlertDelay:     b.tl.Awareness.Sub(b.tl.FirstForged),
		Containment:    b.tl.Revoked,
		ForgedSent:     b.sent,
		ForgedServed:   b.served,
		NormalRequests: b.normal,
		TimeToScope:    b.hist.ScopePublished.Sub(b.tl.Awareness),
		Notes: []string{
			"signature-only gateway: every forged token with a valid signature is served",
			"no detection: the first alert is the attacker's own e-mails to customers (historical awareness " + b.tl.Awareness.Format(timeLayout) + ")",
			"key never rotated at the custodian's departure; revoked " + b.tl.Revoked.Format("2006-01-02") + " (historical)",
			"time to scope: from awareness to the published investigation results (historical)",
		},
	}
	if b.variant != scenario.StolenKey {
		// The published timeline is the stolen-key attack's; another
		// attacker meets a gateway without detection and is never stopped.
		w.KeyDied, w.FirstAlert, w.AlertDelay, w.Containment, w.TimeToScope = time.Time{}, time.Time{}, 0, time.Time{}, 0
		w.Notes = []string{"signature-only gateway, no detection: the " + string(b.variant) + " attacker is served throughout"}
	}
	b.exposure.Fill(&w)
	return w
}

const timeLayout = "2006-01-02 15:04 MST"

func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
