package detect

import (
	"math"
	"math/bits"
)

// hll is a dense HyperLogLog sketch of 2^hllPrecision one-byte registers
// that gives exactly the estimates of github.com/axiomhq/hyperloglog's dense
// sketches of the same precision (the LogLog-Beta estimator, same register
// layout), which it replaces here because that library recomputes a power of
// two per register on every estimate (1,024 math.Pow calls, the engine's
// largest cost) and does not expose its registers. hll also keeps how many
// registers hold each value, so an estimate costs a pass over at most 56
// counts, and remembers its last estimate until a register changes.
// TestHLLMatchesLibrary and FuzzHLLMatchesLibrary check the equality.
type hll struct {
	regs    [hllRegs]uint8
	hist    [hllMaxRho + 1]uint16 // hist[v]: registers holding v, for v ≥ 1
	nonzero uint16                // registers above zero
	valid   bool                  // est is the estimate of regs
	est     uint64
}

const (
	hllRegs   = 1 << hllPrecision
	hllMaxRho = 64 - hllPrecision + 1
	// hllExact: while no register exceeds it, the sum of 2^-register over
	// the registers is exact in float64 whatever the order of the additions
	// (every partial sum is a multiple of 2^-hllExact below 2^10), so the
	// sum of the counts equals the library's sum in register order.
	hllExact = 42
)

// hllAlpha and hllM are the library's alpha and m for hllRegs registers,
// computed at run time as it does (a constant expression would be rounded
// differently).
var (
	hllM     = float64(hllRegs)
	hllAlpha = 0.7213 / (1 + 1.079/hllM)
	// hllBeta[z] is beta(hllPrecision, z) for z zero registers.
	hllBeta = func() (t [hllRegs + 1]float64) {
		for z := range t {
			t[z] = beta10(float64(z))
		}
		return t
	}()
	// hllInv[v] is 1 / 2^v as the library computes it.
	hllInv = func() (t [hllMaxRho + 1]float64) {
		for v := range t {
			t[v] = 1.0 / math.Pow(2.0, float64(v))
		}
		return t
	}()
)

// beta10 is the LogLog-Beta bias correction for precision 10 (Qin et al.,
// 2016), with the library's coefficients and order of operations.
func beta10(ez float64) float64 {
	zl := math.Log(ez + 1)
	return -0.25935400670790054*ez +
		-0.52598301999805808*zl +
		1.48933034925876839*math.Pow(zl, 2) +
		-1.29642714084993571*math.Pow(zl, 3) +
		0.62284756217221615*math.Pow(zl, 4) +
		-0.15672326770251041*math.Pow(zl, 5) +
		0.02054415903878563*math.Pow(zl, 6) +
		-0.00112488483925502*math.Pow(zl, 7)
}

// insertHash adds a uniformly distributed 64-bit hash.
func (s *hll) insertHash(x uint64) {
	i := x >> (64 - hllPrecision)
	r := uint8(bits.LeadingZeros64(x<<hllPrecision|1<<(hllPrecision-1))) + 1
	s.raise(i, r)
}

func (s *hll) raise(i uint64, r uint8) {
	old := s.regs[i]
	if r <= old {
		return
	}
	s.regs[i] = r
	if old == 0 {
		s.nonzero++
	} else {
		s.hist[old]--
	}
	s.hist[r]++
	s.valid = false
}

// merge adds o's values to s.
func (s *hll) merge(o *hll) {
	for i, r := range o.regs {
		s.raise(uint64(i), r)
	}
}

func (s *hll) reset() { *s = hll{} }

// estimate returns the cardinality estimate.
func (s *hll) estimate() uint64 {
	if s.valid {
		return s.est
	}
	ez := float64(hllRegs - int(s.nonzero))
	var sum float64
	if s.exact() {
		n := uint64(hllRegs-int(s.nonzero)) << hllExact
		for v := 1; v <= hllExact; v++ {
			n += uint64(s.hist[v]) << (hllExact - v)
		}
		sum = float64(n) / (1 << hllExact)
	} else {
		for _, v := range s.regs { // the library's order
			sum += hllInv[v]
		}
	}
	m := hllM
	est := hllAlpha * m * (m - ez) / (sum + hllBeta[hllRegs-int(s.nonzero)])
	s.est, s.valid = uint64(est+0.5), true
	return s.est
}

// exact reports whether no register exceeds hllExact.
func (s *hll) exact() bool {
	for v := hllExact + 1; v <= hllMaxRho; v++ {
		if s.hist[v] != 0 {
			return false
		}
	}
	return true
}
