//go:build unix

package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
)

// countingBackend counts the batches and rows the commit loop hands over.
type countingBackend struct {
	*Backend
	batches, rows atomic.Int64
}

func (c *countingBackend) PutBatch(ctx context.Context, e []ledger.Entry) error {
	c.batches.Add(1)
	c.rows.Add(int64(len(e)))
	return c.Backend.PutBatch(ctx, e)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPutCallers is group commit at several numbers of concurrent
// callers: puts/s, the mean batch the commit loop formed, and the process CPU
// per put (each commit has a fixed cost, so small batches cost more per put).
//
//	go test -count=1 -run '^$' -bench BenchmarkPutCallers -benchtime 2s ./ledger/sqlite/
func BenchmarkPutCallers(b *testing.B) {
	for _, callers := range []int{4, 16, 64, 256} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			be := &countingBackend{Backend: open(b)}
			l, err := ledger.New(context.Background(), be, time.Now)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			procs := max(1, callers/2) // RunParallel starts parallelism × GOMAXPROCS goroutines
			b.SetParallelism(procs)
			c0 := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := l.Put(context.Background(), randomEntry(time.Now().Add(time.Hour))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cpu := processCPU() - c0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
			if n := be.batches.Load(); n > 0 {
				b.ReportMetric(float64(be.rows.Load())/float64(n), "rows/batch")
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/put")
		})
	}
}
