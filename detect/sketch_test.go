package detect

import "testing"

// TestSketchReuse checks that the sketches of dropped keys are freed and
// reused, never while a live key still refers to them: a key kept alive
// through many generation drops keeps its own count.
func TestSketchReuse(t *testing.T) {
	m := newGenMap[rotState](64)
	var s sketches
	sweepOnDrop(m, &s, func(v *rotState) *windowDistinct { return &v.wd })
	const hot = 7777
	for k := uint64(1); k <= 2000; k++ {
		v := m.get(k * 0x9e3779b97f4a7c15)
		for j := uint64(0); j < 40; j++ {
			v.wd.add(1, mix(k<<20|j), &s, k*0x9e3779b97f4a7c15)
		}
		h := m.get(hot)
		h.wd.add(1, mix(k%50), &s, hot)
	}
	h, ok := m.lookup(hot)
	if !ok {
		t.Fatal("hot key dropped")
	}
	if n := h.wd.cur.count(&s); n < 45 || n > 55 {
		t.Fatalf("hot key counts %d distinct values, want about 50", n)
	}
	// Every live sketch is referred to by exactly one live value.
	refs := map[uint32]int{}
	for _, tb := range []*table[rotState]{&m.cur, &m.old} {
		for i, k := range tb.keys {
			if k == 0 || k == moved {
				continue
			}
			v := &tb.vals[tb.idx[i]]
			for _, id := range []uint32{v.wd.cur.sk, v.wd.old.sk} {
				if id != 0 {
					refs[id]++
				}
			}
		}
	}
	for id, n := range refs {
		if n != 1 || s.owner[id-1] == 0 {
			t.Fatalf("sketch %d referred to %d times, owner %x", id, n, s.owner[id-1])
		}
	}
	// At most the keys of two generations hold sketches.
	if len(s.sk) > 2*m.half+2 {
		t.Fatalf("%d sketches for at most %d live keys", len(s.sk), 2*m.half)
	}
	if s.inUse() < len(refs) {
		t.Fatalf("%d sketches in use, %d referred to", s.inUse(), len(refs))
	}
}

func TestCountrySet(t *testing.T) {
	s := newCountrySet([]string{"KR", "JP", "XKX"})
	for c, want := range map[string]bool{"KR": true, "JP": true, "XKX": true, "KP": false, "RK": false,
		"K": false, "": false, "KRX": false, "kr": false} {
		if s.has(c) != want {
			t.Errorf("has(%q) = %v, want %v", c, !want, want)
		}
	}
}

func TestBucketer(t *testing.T) {
	k := newBucketer(7)
	for _, x := range []int64{0, 1, 6, 7, 8, 13, 14, 100, 99, 3, -1, -7, -8, -14, -13, -6, 0, 6, 7, -20, 21} {
		if got := k.of(x); got != x/7 {
			t.Fatalf("of(%d) = %d, want %d", x, got, x/7)
		}
	}
}

// TestGenMap: a key stays found (with its value) while it is used at least
// once per half new keys, and a key not used for two generations is gone.
func TestGenMap(t *testing.T) {
	m := newGenMap[uint64](200) // generations of 100 keys
	const hot = 12345
	*m.get(hot) = 7
	for i := uint64(1); i <= 5000; i++ {
		k := mix(i)
		*m.get(k) = i
		if v, ok := m.peek(k); !ok || *v != i {
			t.Fatalf("key %d: %v %v", i, ok, v)
		}
		if i%50 == 0 {
			if v, ok := m.peek(hot); !ok || *v != 7 {
				t.Fatalf("hot key lost after %d keys", i)
			}
		}
		if i > 250 {
			if _, ok := m.lookup(mix(i - 250)); ok {
				t.Fatalf("key %d kept after 250 newer keys", i-250)
			}
		}
		if i > 50 {
			if v, ok := m.lookup(mix(i - 50)); !ok || *v != i-50 {
				t.Fatalf("key %d lost after 50 newer keys", i-50)
			}
		}
	}
	if m.len() > 200 {
		t.Fatalf("%d keys live, at most 200", m.len())
	}
}
