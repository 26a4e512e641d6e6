package sim

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/sim/scenario"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplayBaseline runs the whole stream through the baseline world,
// once per iteration, at scale 0.01 (CUSTOS_SIM_SCALE overrides).
func BenchmarkReplayBaseline(b *testing.B) {
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.01
	if v, err := strconv.ParseFloat(os.Getenv("CUSTOS_SIM_SCALE"), 64); err == nil {
		cfg.Scale = v
	}
	var reqs uint64
	cpu0 := cpuTime()
	for range b.N {
		s, err := scenario.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		bl := NewBaseline(s)
		if err := Run(context.Background(), s, nil, bl); err != nil {
			b.Fatal(err)
		}
		reqs += s.Emitted()
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(reqs)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(reqs), "cpu-ns/req")
	b.ReportMetric(float64(reqs)/float64(b.N), "req/op")
}
