package detect

import "math/bits"

// genMap is a bounded map from 64-bit hashed keys to values: two
// generations of at most half entries each. Looking a key up in the old
// generation moves it to the young one, so keys in use survive and idle ones
// are dropped wholesale when the young generation fills. Each generation is an
// open-addressing index (linear probing, load at most 1/2, growing on demand)
// of keys and value positions, and a dense array of values in the order the
// keys arrived: probing stays within a few cache lines, and a stream of new
// keys writes its values one after the other (which the processor's
// prefetchers handle well) instead of at random. No allocation and no pointer
// to chase per lookup. Values hold no pointers (sketches are referred to by
// index, see [sketches]), so the garbage collector never scans the tables
// and a dropped generation's values need not be cleared: a value is written
// whole when its key arrives.
type genMap[V any] struct {
	cur, old   table[V]
	ncur, nold int
	half       int
	// onDrop, when set, runs after a generation is dropped, once the key
	// that caused it is in place.
	onDrop func()
}

type table[V any] struct {
	keys []uint64 // 0: empty; moved: taken to the young generation
	idx  []uint32 // position in vals of keys[i]'s value
	vals []V
	// bits has a bit set for every key taken (by its top bits): most
	// absent keys are known absent from it, an eighth of keys' size,
	// without probing keys.
	bits  []uint64
	shift uint8
}

func (t *table[V]) maybe(k uint64) bool {
	if len(t.bits) == 0 {
		return false
	}
	b := k >> t.shift
	return t.bits[b>>6]&(1<<(b&63)) != 0
}

func (t *table[V]) mark(k uint64) {
	b := k >> t.shift
	t.bits[b>>6] |= 1 << (b & 63)
}

const (
	moved    = ^uint64(0)
	minSlots = 16
)

func newGenMap[V any](max int) *genMap[V] {
	h := max / 2
	if h < 1 {
		h = 1
	}
	return &genMap[V]{half: h}
}

// norm keeps real keys off the two reserved values.
func norm(k uint64) uint64 {
	if k == 0 || k == moved {
		return 2
	}
	return k
}

// find returns k's slot in keys, or the empty slot where it would go.
func find(keys []uint64, k uint64) (int, bool) {
	mask := uint64(len(keys) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		switch keys[i] {
		case k:
			return int(i), true
		case 0:
			return int(i), false
		}
	}
}

// get returns the entry for k, creating it (zero) when absent. The pointer
// is valid until the next get or peek.
func (m *genMap[V]) get(k uint64) *V {
	k = norm(k)
	if m.cur.maybe(k) {
		if i, ok := find(m.cur.keys, k); ok {
			return &m.cur.vals[m.cur.idx[i]]
		}
	}
	if m.old.maybe(k) {
		if i, ok := find(m.old.keys, k); ok {
			return m.move(k, i)
		}
	}
	p, dropped := m.put(k)
	var zero V
	*p = zero
	m.dropped(dropped)
	return p
}

// move takes k, at slot i of the old generation, to the young one.
func (m *genMap[V]) move(k uint64, i int) *V {
	v := m.old.vals[m.old.idx[i]] // a copy: put may reuse old's storage
	m.old.keys[i] = moved
	m.nold--
	p, dropped := m.put(k)
	*p = v
	m.dropped(dropped)
	return p
}

// peek returns the entry for k without creating it.
func (m *genMap[V]) peek(k uint64) (*V, bool) {
	k = norm(k)
	if m.cur.maybe(k) {
		if i, ok := find(m.cur.keys, k); ok {
			return &m.cur.vals[m.cur.idx[i]], true
		}
	}
	if m.old.maybe(k) {
		if i, ok := find(m.old.keys, k); ok {
			return m.move(k, i), true
		}
	}
	return nil, false
}

// lookup returns the entry for k without creating or moving it.
func (m *genMap[V]) lookup(k uint64) (*V, bool) {
	k = norm(k)
	for _, t := range [2]*table[V]{&m.cur, &m.old} {
		if t.maybe(k) {
			if i, ok := find(t.keys, k); ok {
				return &t.vals[t.idx[i]], true
			}
		}
	}
	return nil, false
}

// put takes a slot for k, absent from the young generation, and returns
// its value, which the caller must write whole and then pass dropped to
// m.dropped.
func (m *genMap[V]) put(k uint64) (v *V, dropped bool) {
	if m.ncur >= m.half {
		// The young generation is full: drop the old one, keeping its
		// storage. Its values are left as they are: each is written
		// whole when a key takes it.
		clear(m.old.keys)
		clear(m.old.bits)
		m.old, m.cur = m.cur, m.old
		m.cur.vals = m.cur.vals[:0]
		m.nold, m.ncur = m.ncur, 0
		dropped = true
	}
	if 2*(m.ncur+1) > len(m.cur.keys) {
		m.grow()
	}
	i, _ := find(m.cur.keys, k)
	n := len(m.cur.vals)
	if n < cap(m.cur.vals) {
		m.cur.vals = m.cur.vals[:n+1]
	} else {
		var zero V
		m.cur.vals = append(m.cur.vals, zero)
	}
	m.cur.keys[i], m.cur.idx[i] = k, uint32(n)
	m.cur.mark(k)
	m.ncur++
	return &m.cur.vals[n], dropped
}

// dropped runs onDrop if put dropped a generation, once the new value is
// in place (it may be the moved value of a key of the dropped generation).
func (m *genMap[V]) dropped(d bool) {
	if d && m.onDrop != nil {
		m.onDrop()
	}
}

// grow doubles the young index; values stay where they are.
func (m *genMap[V]) grow() {
	n := minSlots
	for n < 2*(m.ncur+1) {
		n *= 2
	}
	if n <= len(m.cur.keys) {
		return
	}
	// 8 filter bits per slot (at least 16 per key), sized with the index so
	// that a small table's filter stays small.
	m.cur.bits = make([]uint64, n/8)
	m.cur.shift = uint8(64 - bits.TrailingZeros(uint(8*n)))
	keys, idx := make([]uint64, n), make([]uint32, n)
	for i, k := range m.cur.keys {
		if k != 0 && k != moved {
			j, _ := find(keys, k)
			keys[j], idx[j] = k, m.cur.idx[i]
			m.cur.mark(k)
		}
	}
	m.cur.keys, m.cur.idx = keys, idx
}

func (m *genMap[V]) len() int { return m.ncur + m.nold }

// sketches holds the HyperLogLog sketches of one table's values, which
// refer to them by index + 1 (0: none), so that the tables hold no pointers.
// A sketch belongs to the key that took it; when a generation is dropped,
// sweep frees the sketches no surviving value refers to, and they are
// reused: the store never holds more sketches than were live at once.
type sketches struct {
	sk    []*hll
	owner []uint64 // key that took sk[i]; 0: free
	free  []uint32
}

// take returns the index + 1 of an empty sketch for owner.
func (s *sketches) take(owner uint64) uint32 {
	owner = norm(owner)
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		s.sk[i].reset()
		s.owner[i] = owner
		return i + 1
	}
	s.sk = append(s.sk, new(hll))
	s.owner = append(s.owner, owner)
	return uint32(len(s.sk))
}

func (s *sketches) at(id uint32) *hll { return s.sk[id-1] }

// inUse reports how many sketches values refer to.
func (s *sketches) inUse() int { return len(s.sk) - len(s.free) }

// sweep frees every sketch whose owner's value (or absence) no longer
// refers to it, as live reports.
func (s *sketches) sweep(live func(owner uint64, id uint32) bool) {
	for i, o := range s.owner {
		if o != 0 && !live(o, uint32(i)+1) {
			s.owner[i] = 0
			s.free = append(s.free, uint32(i))
		}
	}
}

// sweepOnDrop makes m free the sketches of dropped values: wd returns where
// a value keeps its windowed sketches.
func sweepOnDrop[V any](m *genMap[V], s *sketches, wd func(*V) *windowDistinct) {
	m.onDrop = func() {
		if s.inUse() == 0 {
			return
		}
		s.sweep(func(owner uint64, id uint32) bool {
			v, ok := m.lookup(owner)
			if !ok {
				return false
			}
			w := wd(v)
			return w.cur.sk == id || w.old.sk == id
		})
	}
}

// smallExact is how many distinct values a counter keeps exactly before it
// switches to a sketch.
const smallExact = 8

// hllPrecision gives 1024 one-byte registers, about 3.25% standard error.
const hllPrecision = 10

// distinct counts distinct values: exactly up to smallExact (by 32-bit
// fingerprint), then with a HyperLogLog sketch.
type distinct struct {
	small [smallExact]uint32
	n     uint8
	since uint8  // inserts since est was computed
	sk    uint32 // index + 1 in the table's sketches; 0: none
	est   uint32 // cached estimate of sk
}

// fingerprint is the 32 bits of a 64-bit hash that distinct keeps.
func fingerprint(h uint64) uint32 { return uint32(h >> 32) }

// sketchHash spreads a fingerprint over the 64 bits a sketch reads.
func sketchHash(fp uint32) uint64 { return mix(uint64(fp)) }

func (d *distinct) reset(s *sketches) {
	d.n, d.est, d.since = 0, 0, 0
	if d.sk != 0 {
		s.at(d.sk).reset()
	}
}

// add inserts h; owner is the key whose value holds d.
func (d *distinct) add(h uint64, s *sketches, owner uint64) {
	fp := fingerprint(h)
	if d.sk == 0 {
		for i := uint8(0); i < d.n; i++ {
			if d.small[i] == fp {
				return
			}
		}
		if d.n < smallExact {
			d.small[d.n] = fp
			d.n++
			return
		}
		d.sk = s.take(owner)
	}
	sk := s.at(d.sk)
	if d.n > 0 {
		for i := uint8(0); i < d.n; i++ {
			sk.insertHash(sketchHash(d.small[i]))
		}
		d.n = 0
	}
	sk.insertHash(sketchHash(fp))
	d.since++
}

// count returns the estimate, recomputing the sketch's at most every 32 inserts.
func (d *distinct) count(s *sketches) uint64 {
	if d.sk == 0 {
		return uint64(d.n)
	}
	if d.since >= 32 || d.est == 0 {
		d.est = uint32(min(s.at(d.sk).estimate(), 1<<32-1))
		d.since = 0
	}
	return uint64(d.est)
}

// windowDistinct counts distinct values over a sliding window kept as two
// half-window buckets; the count covers between half and all of the window.
type windowDistinct struct {
	bucket   int64 // index of cur's half-window
	fired    int64 // bucket in which this key last crossed the threshold
	cur, old distinct
}

// add inserts h at half-window index b and returns the windowed count estimate.
// The result is the sum of both buckets' counts, an upper bound of their
// union: callers compute the costlier union only when the sum crosses their
// threshold.
func (w *windowDistinct) add(b int64, h uint64, s *sketches, owner uint64) uint64 {
	w.roll(b, s)
	w.cur.add(h, s, owner)
	return w.cur.count(s) + w.old.count(s)
}

func (w *windowDistinct) roll(b int64, s *sketches) {
	switch {
	case b == w.bucket:
	case b == w.bucket+1:
		w.old, w.cur = w.cur, w.old
		w.cur.reset(s)
		w.bucket = b
	case b > w.bucket:
		w.old.reset(s)
		w.cur.reset(s)
		w.bucket = b
	}
}

// union estimates the distinct count of both buckets together.
func (w *windowDistinct) union(s *sketches, scratch *hll) uint64 {
	if w.old.count(s) == 0 {
		return w.cur.count(s)
	}
	if w.cur.sk == 0 && w.old.sk == 0 {
		n := uint64(w.old.n)
	outer:
		for i := uint8(0); i < w.cur.n; i++ {
			for j := uint8(0); j < w.old.n; j++ {
				if w.cur.small[i] == w.old.small[j] {
					continue outer
				}
			}
			n++
		}
		return n
	}
	scratch.reset()
	for _, d := range []*distinct{&w.cur, &w.old} {
		if d.sk != 0 {
			scratch.merge(s.at(d.sk))
		}
		for i := uint8(0); i < d.n; i++ {
			scratch.insertHash(sketchHash(d.small[i]))
		}
	}
	return scratch.estimate()
}

// windowCount counts events over a sliding window of length h kept as two
// window-long buckets, weighting the older bucket by how much of it is still
// inside (the usual sliding-window approximation).
type windowCount struct {
	bucket   int64
	cur, old uint32
	fired    int64
}

// add counts n at time t (nanoseconds) with half-window h and returns the estimate.
func (w *windowCount) add(t, h int64, n uint32) uint32 {
	b := t / h
	switch {
	case b == w.bucket:
	case b == w.bucket+1:
		w.old, w.cur, w.bucket = w.cur, 0, b
	case b > w.bucket:
		w.old, w.cur, w.bucket = 0, 0, b
	}
	w.cur += n
	frac := float64(h-(t-b*h)) / float64(h)
	return w.cur + uint32(float64(w.old)*frac)
}

// ratioCount is unknown_subject_rate's state: two windowed counts that
// always move together (not-found answers and all answers), sharing one
// bucket index.
type ratioCount struct {
	bucket         int64
	nfCur, nfOld   uint32
	allCur, allOld uint32
	fired          bool
}

// add counts one answer (nf: a not-found one) in window b, frac of which
// is still ahead, and returns the estimates of not-found and all answers.
func (w *ratioCount) add(b int64, frac float64, nf bool) (n, all uint32) {
	switch {
	case b == w.bucket:
	case b == w.bucket+1:
		w.nfOld, w.nfCur, w.allOld, w.allCur, w.bucket = w.nfCur, 0, w.allCur, 0, b
	case b > w.bucket:
		w.nfOld, w.nfCur, w.allOld, w.allCur, w.bucket = 0, 0, 0, 0, b
	}
	if nf {
		w.nfCur++
	}
	w.allCur++
	return w.nfCur + uint32(float64(w.nfOld)*frac), w.allCur + uint32(float64(w.allOld)*frac)
}
