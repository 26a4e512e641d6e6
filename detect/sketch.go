package detect

import (
	"github.com/axiomhq/hyperloglog"
)

// genMap is a bounded map from 64-bit hashed keys to inline values: two
// generations of at most half entries each, each an open-addressing table
// (linear probing, load at most 1/2) that grows on demand. Looking a key up in
// the old generation moves it to the young one, so keys in use survive and
// idle ones are dropped wholesale when the young generation fills. Keys sit
// apart from values so that probing stays within a few cache lines; values
// live inside the table: no allocation and no pointer to chase per lookup.
type genMap[V any] struct {
	cur, old   table[V]
	ncur, nold int
	half       int
}

type table[V any] struct {
	keys []uint64 // 0: empty; moved: taken to the young generation
	vals []V
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
	if len(m.cur.keys) > 0 {
		if i, ok := find(m.cur.keys, k); ok {
			return &m.cur.vals[i]
		}
	}
	var v V
	if len(m.old.keys) > 0 {
		if i, ok := find(m.old.keys, k); ok {
			v = m.old.vals[i]
			m.old.keys[i] = moved
			m.nold--
		}
	}
	return m.put(k, &v)
}

// peek returns the entry for k without creating it.
func (m *genMap[V]) peek(k uint64) (*V, bool) {
	k = norm(k)
	if len(m.cur.keys) > 0 {
		if i, ok := find(m.cur.keys, k); ok {
			return &m.cur.vals[i], true
		}
	}
	if len(m.old.keys) > 0 {
		if i, ok := find(m.old.keys, k); ok {
			v := m.old.vals[i]
			m.old.keys[i] = moved
			m.nold--
			return m.put(k, &v), true
		}
	}
	return nil, false
}

func (m *genMap[V]) put(k uint64, v *V) *V {
	if m.ncur >= m.half {
		// The young generation is full: drop the old one, keeping its
		// storage. Its values are cleared too, so that no sketch of a
		// dropped key stays reachable: only live keys hold memory.
		clear(m.old.keys)
		clear(m.old.vals)
		m.old, m.cur = m.cur, m.old
		m.nold, m.ncur = m.ncur, 0
	}
	if 2*(m.ncur+1) > len(m.cur.keys) {
		m.grow()
	}
	i, _ := find(m.cur.keys, k)
	m.cur.keys[i], m.cur.vals[i] = k, *v
	m.ncur++
	return &m.cur.vals[i]
}

// grow doubles the young table.
func (m *genMap[V]) grow() {
	n := minSlots
	for n < 2*(m.ncur+1) {
		n *= 2
	}
	if n <= len(m.cur.keys) {
		return
	}
	t := table[V]{keys: make([]uint64, n), vals: make([]V, n)}
	for i, k := range m.cur.keys {
		if k != 0 && k != moved {
			j, _ := find(t.keys, k)
			t.keys[j], t.vals[j] = k, m.cur.vals[i]
		}
	}
	m.cur = t
}

func (m *genMap[V]) len() int { return m.ncur + m.nold }

// smallExact is how many distinct values a counter keeps exactly before it
// switches to a sketch.
const smallExact = 8

// hllPrecision gives 1024 one-byte registers, about 3.25% standard error.
const hllPrecision = 10

// distinct counts distinct 64-bit hashes: exactly up to smallExact, then with
// a HyperLogLog sketch.
type distinct struct {
	small [smallExact]uint64
	n     uint8
	sk    *hyperloglog.Sketch
	est   uint64 // cached estimate of sk
	since uint16 // inserts since est was computed
}

func (d *distinct) reset() {
	d.n, d.est, d.since = 0, 0, 0
	if d.sk != nil {
		d.sk.Reset()
	}
}

// add inserts h.
func (d *distinct) add(h uint64) {
	if d.sk == nil {
		for i := uint8(0); i < d.n; i++ {
			if d.small[i] == h {
				return
			}
		}
		if d.n < smallExact {
			d.small[d.n] = h
			d.n++
			return
		}
		d.sk, _ = hyperloglog.NewSketch(hllPrecision, false)
	}
	if d.n > 0 {
		for i := uint8(0); i < d.n; i++ {
			d.sk.InsertHash(d.small[i])
		}
		d.n = 0
	}
	d.sk.InsertHash(h)
	d.since++
}

// count returns the estimate, recomputing the sketch's at most every 32 inserts.
func (d *distinct) count() uint64 {
	if d.sk == nil {
		return uint64(d.n)
	}
	if d.since >= 32 || d.est == 0 {
		d.est = d.sk.Estimate()
		d.since = 0
	}
	return d.est
}

// windowDistinct counts distinct values over a sliding window kept as two
// half-window buckets; the count covers between half and all of the window.
type windowDistinct struct {
	bucket   int64 // index of cur's half-window
	cur, old distinct
	fired    int64 // bucket in which this key last crossed the threshold
}

// add inserts h at half-window index b and returns the windowed count estimate.
// The result is the sum of both buckets' counts, an upper bound of their
// union: callers compute the costlier union only when the sum crosses their
// threshold.
func (w *windowDistinct) add(b int64, h uint64) uint64 {
	w.roll(b)
	w.cur.add(h)
	return w.cur.count() + w.old.count()
}

func (w *windowDistinct) roll(b int64) {
	switch {
	case b == w.bucket:
	case b == w.bucket+1:
		w.old, w.cur = w.cur, w.old
		w.cur.reset()
		w.bucket = b
	case b > w.bucket:
		w.old.reset()
		w.cur.reset()
		w.bucket = b
	}
}

// union estimates the distinct count of both buckets together.
func (w *windowDistinct) union(scratch *hyperloglog.Sketch) uint64 {
	if w.old.count() == 0 {
		return w.cur.count()
	}
	if w.cur.sk == nil && w.old.sk == nil {
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
	scratch.Reset()
	for _, d := range []*distinct{&w.cur, &w.old} {
		if d.sk != nil {
			_ = scratch.Merge(d.sk)
		}
		for i := uint8(0); i < d.n; i++ {
			scratch.InsertHash(d.small[i])
		}
	}
	return scratch.Estimate()
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
