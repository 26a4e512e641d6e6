package detect

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// benchRules are 20 rules of the kinds a shop writes.
func benchRules() string {
	exprs := []string{
		`route == "/v1/members/{id}/addresses" && country != "KR"`,
		`"entrance_code" in data_classes && verdict == "allow"`,
		`status == 404 && subject != ""`,
		`reason == "not_issued"`,
		`reason == "decoy_subject"`,
		`asn == 16509 && route.startsWith("/v1/members/")`,
		`user_agent.contains("python-requests")`,
		`token.kid == "k-old"`,
		`bytes > 1000000`,
		`latency_us > 5000000`,
		`method == "DELETE" && route == "/v1/members/{id}"`,
		`verdict == "deny" && reason == "revoked_token"`,
		`token.sub != "" && subject != "" && token.sub != subject`,
		`country == "CN" || country == "RU"`,
		`status >= 500`,
		`"order_history" in data_classes && country != "KR"`,
		`src_ip.startsWith("203.0.113.")`,
		`token.aud == "internal" && route.startsWith("/v1/")`,
		`gateway == "gw-legacy"`,
		`route == "/v1/orders" && status == 200 && bytes > 500000`,
	}
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i, x := range exprs {
		fmt.Fprintf(&sb, "  - name: r%d\n    expr: '%s'\n", i, strings.ReplaceAll(x, "'", "''"))
		if i%4 == 0 {
			sb.WriteString("    threshold: 50\n    window: 10m\n    group_by: src_ip\n")
		}
	}
	return sb.String()
}

// benchEvents is ordinary traffic: many members, each from their own address.
func benchEvents(n int) []event.Access {
	out := make([]event.Access, n)
	for i := range out {
		a := ev(i)
		sub := strconv.Itoa(100000 + (i*7919)%200000)
		a.Subject, a.Token.Sub, a.Token.JTI = sub, sub, "jti-"+sub
		a.SrcIP = fmt.Sprintf("10.%d.%d.%d", i%200, (i/200)%250, 1+i%7)
		a.Time = t0.Add(time.Duration(i) * time.Microsecond)
		if i%50 == 0 {
			a.Status = 404
		}
		out[i] = a
	}
	return out
}

func benchEngine(b *testing.B, withRules bool) *Engine {
	e := newEngine(b, nil)
	e.Login("seed", t0.Add(-time.Hour))
	if withRules {
		if err := e.LoadRulesFrom("bench", strings.NewReader(benchRules())); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

func benchProcess(b *testing.B, e *Engine) {
	evs := benchEvents(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		x := evs[i&(1<<16-1)]
		x.Time = t0.Add(time.Duration(i) * time.Microsecond)
		e.Process(x)
	}
	reportRates(b, b.N, time.Since(start), cpuTime()-cpu0)
}

// cpuTime is the CPU time this process has used (user + system, all threads).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRates reports events per wall-clock second and, since the machine
// is shared, the CPU time the process spent per event.
func reportRates(b *testing.B, n int, wall, cpu time.Duration) {
	b.ReportMetric(float64(n)/wall.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/event")
}

// benchBatch feeds the same traffic through ProcessBatch in batches of
// maxBatch events: numShards goroutines share the work.
func benchBatch(b *testing.B, e *Engine) {
	evs := benchEvents(1 << 16)
	batch := make([]event.Access, maxBatch)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i += maxBatch {
		n := min(maxBatch, b.N-i)
		for j := 0; j < n; j++ {
			batch[j] = evs[(i+j)&(1<<16-1)]
			batch[j].Time = t0.Add(time.Duration(i+j) * time.Microsecond)
		}
		e.ProcessBatch(batch[:n])
	}
	reportRates(b, b.N, time.Since(start), cpuTime()-cpu0)
}

// BenchmarkBuiltins: the ten built-in detectors alone.
func BenchmarkBuiltins(b *testing.B) { benchProcess(b, benchEngine(b, false)) }

// BenchmarkEngine: all built-ins plus 20 CEL rules, one goroutine.
func BenchmarkEngine(b *testing.B) { benchProcess(b, benchEngine(b, true)) }

// BenchmarkRulesOnly: the 20 CEL rules with the built-ins off.
func BenchmarkRulesOnly(b *testing.B) { benchProcess(b, rulesOnlyEngine(b)) }

// BenchmarkBuiltinsBatch, BenchmarkEngineBatch, BenchmarkRulesOnlyBatch: the
// same through ProcessBatch, the path Run takes when events queue up.
func BenchmarkBuiltinsBatch(b *testing.B)  { benchBatch(b, benchEngine(b, false)) }
func BenchmarkEngineBatch(b *testing.B)    { benchBatch(b, benchEngine(b, true)) }
func BenchmarkRulesOnlyBatch(b *testing.B) { benchBatch(b, rulesOnlyEngine(b)) }

func rulesOnlyEngine(b *testing.B) *Engine {
	var cfg Config
	for _, t := range []*Toggle{&cfg.NotIssued, &cfg.DecoySubject.Toggle, &cfg.RevokedKey, &cfg.DepartedCred,
		&cfg.Enumeration.Toggle, &cfg.UnknownSubject.Toggle, &cfg.ForeignOrigin.Toggle, &cfg.IPRotation.Toggle,
		&cfg.RouteVolume.Toggle, &cfg.TokenWithoutLogin.Toggle} {
		t.Disabled = true
	}
	e, _ := New(cfg, clock)
	if err := e.LoadRulesFrom("bench", strings.NewReader(benchRules())); err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkAlertLatency measures, on the live path (a channel into Run), the
// time from sending an attack event to its alert reaching OnAlert, with
// ordinary traffic flowing. Reports p50/p99.
func BenchmarkAlertLatency(b *testing.B) {
	e := benchEngine(b, true)
	e.cfg.DedupWindow = time.Second // so every probe raises a fresh alert
	got := make(chan time.Time, 1)
	e.OnAlert(func(a Alert) {
		if a.Rule == RuleNotIssued {
			got <- time.Now()
		}
	})
	ch := make(chan event.Access, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx, ch)
	evs := benchEvents(1 << 12)
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 1000; j++ { // background traffic ahead of the probe
			x := evs[(i*1000+j)&(1<<12-1)]
			x.Time = t0.Add(time.Duration(i) * 2 * time.Second)
			ch <- x
		}
		p := notIssued(i, "k-probe")
		p.Time = t0.Add(time.Duration(i)*2*time.Second + time.Millisecond)
		sent := time.Now()
		ch <- p
		lat = append(lat, (<-got).Sub(sent))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// TestMemoryBound feeds 300,000 distinct sources and subjects and checks
// that the heap stays within the documented bound.
func TestMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := newEngine(t, nil)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 300_000; i++ {
		a := ev(i)
		a.SrcIP = fmt.Sprintf("%d.%d.%d.%d", 1+i>>24&0x7f, i>>16&0xff, i>>8&0xff, i&0xff)
		a.Subject = strconv.Itoa(i)
		a.Token.JTI, a.Token.Sub = a.Subject, a.Subject
		a.UserAgent = "ua" + strconv.Itoa(i%100000)
		a.ASN = uint32(i % 70000)
		e.Process(a)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if e.Events() != 300_000 {
		t.Fatal("events lost")
	}
	runtime.KeepAlive(e)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grown by %d MiB after 3e5 distinct sources", grown>>20)
	if grown > 200<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
}
