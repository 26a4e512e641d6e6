package detect

import (
	"hash/maphash"
	"strconv"
)

// A match of a built-in check becomes a fireRec in its shard (shard.fire),
// keyed by alertKey; the engine then applies a batch's fireRecs in event
// order (Engine.fireAttrs), raising an alert or counting into an open one.

// keyMemo is a dedup key and what it was computed from: a check that keeps
// matching one entity (an address walking IDs, a key on every request)
// hashes its strings once.
type keyMemo struct {
	rule, kind, val, val2 string
	k                     uint64
}

// key returns the alertKey of a match of the running check.
func (sh *shard) key(rule, kind, val, val2 string) uint64 {
	m := &sh.keys[sh.ord%uint32(len(sh.keys))]
	if m.rule == rule && m.val == val && m.kind == kind && m.val2 == val2 && m.rule != "" {
		return m.k
	}
	*m = keyMemo{rule: rule, kind: kind, val: val, val2: val2, k: alertKey(sh.seed, rule, kind, val, val2)}
	return m.k
}

// fireRec is a match waiting to be applied to the alerts, in event order.
type fireRec struct {
	idx                      int32
	ord                      uint32 // position of the check in the sequential order
	k                        uint64 // alertKey of rule, kind, val, val2, computed by the shard
	rule                     string
	sev                      Severity
	kind, val, val2, summary string
	n                        int64
	r                        *compiled // with cnt: a threshold rule's summary, written when needed
	cnt                      uint32
}

// text returns the alert summary of f.
func (f *fireRec) text() string {
	if f.r == nil {
		return f.summary
	}
	return "rule " + f.r.Name + " matched " + strconv.FormatUint(uint64(f.cnt), 10) + " times within " + f.r.Window.String()
}

func (sh *shard) fire(rule string, s Severity, kind, val, val2 string, summary string, n int64) {
	sh.fires = append(sh.fires, fireRec{idx: sh.idx, ord: sh.ord, k: sh.key(rule, kind, val, val2), rule: rule, sev: s, kind: kind, val: val, val2: val2, summary: summary, n: n})
}

// alertKey is the dedup key of a match of rule for entity kind:val@val2:
// the strings' hashes chained through mix (cheaper than streaming them
// through one maphash.Hash; shards compute it for their own matches).
func alertKey(seed maphash.Seed, rule, kind, val, val2 string) uint64 {
	k := mix(maphash.String(seed, rule))
	k = mix(k ^ maphash.String(seed, kind))
	k = mix(k ^ maphash.String(seed, val))
	return mix(k ^ maphash.String(seed, val2))
}

// mix is splitmix64's finaliser: it spreads integer keys over 64 bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}
