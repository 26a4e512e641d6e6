package scenario

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: on a shared machine it says
// more than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNext measures requests generated per second over the whole stream
// at scale 0.01, which has the same mix of routes and kinds as scale 1.
func BenchmarkNext(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Scale = 0.01
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var r Request
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		if !s.NextInto(&r) {
			s, _ = New(cfg)
			s.NextInto(&r)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
