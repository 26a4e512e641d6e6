package detect

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// libSketch is the library sketch hll must agree with.
func libSketch(t testing.TB) *hyperloglog.Sketch {
	sk, err := hyperloglog.NewSketch(hllPrecision, false)
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// TestHLLMatchesLibrary: hll gives the library's estimates, bit for bit,
// after every insert of sequences of all sizes, after merges and resets,
// and with registers so high that the sum of their powers is no longer
// exact (the path that adds them in register order).
func TestHLLMatchesLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(what string, h *hll, lib *hyperloglog.Sketch) {
		t.Helper()
		if got, want := h.estimate(), lib.Estimate(); got != want {
			t.Fatalf("%s: estimate %d, library %d", what, got, want)
		}
	}
	for round := 0; round < 40; round++ {
		h, lib := new(hll), libSketch(t)
		check("empty", h, lib)
		n := 1 << (round % 18)
		for i := 0; i < n; i++ {
			x := r.Uint64()
			switch i % 97 {
			case 0: // a hash whose register value exceeds hllExact
				x &= uint64(hllRegs-1) << (64 - hllPrecision)
				x |= 1 << uint(r.IntN(9))
			case 1: // a repeat
				x = 0x9e3779b97f4a7c15 * uint64(round+1)
			}
			h.insertHash(x)
			lib.InsertHash(x)
			if i < 2000 || i%251 == 0 {
				check("insert", h, lib)
			}
			if i%1000 == 999 {
				h.estimate() // cached, then invalidated by the next change
			}
		}
		check("final", h, lib)
		if round%2 == 1 {
			h.reset()
			lib.Reset()
			check("reset", h, lib)
		}
	}
	// Merges of sketches of different sizes, into non-empty ones.
	for round := 0; round < 20; round++ {
		a, la := new(hll), libSketch(t)
		b, lb := new(hll), libSketch(t)
		for i := 0; i < round*300; i++ {
			x := r.Uint64()
			a.insertHash(x)
			la.InsertHash(x)
			y := r.Uint64() >> uint(r.IntN(3)*20)
			b.insertHash(y)
			lb.InsertHash(y)
		}
		a.estimate()
		a.merge(b)
		if err := la.Merge(lb); err != nil {
			t.Fatal(err)
		}
		check("merge", a, la)
	}
}

// TestHLLCounts: the per-value counts follow the registers.
func TestHLLCounts(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := new(hll)
	for i := 0; i < 50000; i++ {
		h.insertHash(r.Uint64())
		if i%997 != 0 {
			continue
		}
		var hist [hllMaxRho + 1]uint16
		nz := 0
		for _, v := range h.regs {
			if v != 0 {
				hist[v]++
				nz++
			}
		}
		if hist != h.hist || nz != int(h.nonzero) {
			t.Fatalf("after %d inserts: counts %v (%d), registers give %v (%d)", i+1, h.hist, h.nonzero, hist, nz)
		}
	}
}

// FuzzHLLMatchesLibrary feeds arbitrary hashes (eight bytes each) to hll
// and to the library: every estimate must agree.
func FuzzHLLMatchesLibrary(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add(make([]byte, 8*300))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, lib := new(hll), libSketch(t)
		for len(data) >= 8 {
			x := binary.LittleEndian.Uint64(data)
			data = data[8:]
			h.insertHash(x)
			lib.InsertHash(x)
			if got, want := h.estimate(), lib.Estimate(); got != want {
				t.Fatalf("estimate %d, library %d", got, want)
			}
		}
	})
}
