package natsbus

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/event"
)

// embedded starts a single in-process NATS server with JetStream on a free
// loopback port, as the embedded default would.
func embedded(b testing.TB) string {
	port := freePort(b)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: filepath.Join(b.TempDir(), "js"), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("embedded nats server not ready")
	}
	b.Cleanup(s.Shutdown)
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

func benchEvents(n int) []event.Access {
	out := make([]event.Access, n)
	for i := range out {
		out[i] = ev(i, fmt.Sprintf("203.0.%d.%d", i%251, i%199))
		out[i].Gateway, out[i].Method, out[i].Path, out[i].Status = "gw-1", "GET", "/api/members/12345/addresses", 200
		out[i].Country, out[i].ASN, out[i].UserAgent = "KR", 4766, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)"
		out[i].Token = event.Token{JTI: fmt.Sprint("j", i), KID: "k1", Sub: "12345", Aud: "shop-api", IAT: 1_750_000_000, EXP: 1_750_000_900}
		out[i].DataClasses = []string{"address", "phone"}
	}
	return out
}

// cpuTime is the CPU time (user+system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time of the separate NATS server process named by
// NATS_SERVER_PID, or -1 when it is not set or unreadable.
func serverCPU() time.Duration {
	pid := os.Getenv("NATS_SERVER_PID")
	if pid == "" {
		return -1
	}
	raw, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 12th and 13th of them, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// BenchmarkInProcessBus is the baseline: event.Bus to one lossless subscriber.
func BenchmarkInProcessBus(b *testing.B) {
	evs := benchEvents(b.N)
	bus := event.NewBus()
	sub := bus.Subscribe(4096, true)
	done := make(chan struct{})
	go func() {
		n := 0
		for batch := range sub.C {
			if n += len(batch); n == b.N {
				close(done)
			}
		}
	}()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	for i := range evs {
		bus.Publish(evs[i])
	}
	<-done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/event")
	sub.Close()
}

// benchJetStream publishes b.N events asynchronously through the bus at url
// and waits until `instances` consumer instances, splitting the partitions,
// have handled all of them.
func benchJetStream(b *testing.B, url string, instances int, drain bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("bench%d", time.Now().UnixNano())
	bus, err := Open(ctx, Config{URL: url, Prefix: prefix, Partitions: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, s := range bus.streams {
			bus.js.DeleteStream(context.Background(), s)
		}
		bus.Close()
	}()
	evs := benchEvents(b.N)
	var got atomic.Int64
	done := make(chan struct{})
	if instances == 0 {
		close(done)
	}
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	consume := func() {
		for i := 0; i < instances; i++ {
			// Each instance has its own connection, as separate processes would.
			inst, err := Open(ctx, Config{URL: url, Prefix: prefix, Partitions: 8})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { inst.Close() })
			go inst.Consume(cctx, "bench", inst.Partitions(i, instances), func(event.Access) error {
				if got.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})
		}
	}
	publish := func() {
		for i := range evs {
			if err := bus.Publish(ctx, evs[i]); err != nil {
				b.Fatal(err)
			}
		}
		if err := bus.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if drain { // the backlog is in the stream before the consumers start
		publish()
	} else {
		consume()
	}
	b.ResetTimer()
	start, cpu, scpu := time.Now(), cpuTime(), serverCPU()
	if drain {
		consume()
	} else {
		publish()
	}
	pub := time.Since(start)
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("consumed %d of %d", got.Load(), b.N)
	}
	el := time.Since(start)
	if !drain {
		b.ReportMetric(float64(b.N)/pub.Seconds(), "published/s")
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/event")
	if scpu >= 0 {
		b.ReportMetric(float64((serverCPU()-scpu).Microseconds())/float64(b.N), "server-cpu-µs/event")
	}
}

// BenchmarkEmbeddedNATS is the same bus code on an in-process NATS server.
func BenchmarkEmbeddedNATS(b *testing.B) {
	url := embedded(b)
	for _, n := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("consumers=%d", n), func(b *testing.B) { benchJetStream(b, url, n, false) })
	}
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("drain/consumers=%d", n), func(b *testing.B) { benchJetStream(b, url, n, true) })
	}
}

// BenchmarkLocalNATS runs against the NATS server of the machine (a separate
// process, as in a scale-out deployment).
func BenchmarkLocalNATS(b *testing.B) {
	url := localURL()
	requireNATS(b, url)
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("consumers=%d", n), func(b *testing.B) { benchJetStream(b, url, n, false) })
		b.Run(fmt.Sprintf("drain/consumers=%d", n), func(b *testing.B) { benchJetStream(b, url, n, true) })
	}
}
