package forensics

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The scale benchmark runs in two steps so that generation does not count
// towards the scope's memory:
//
//	CUSTOS_FORENSICS_GEN_DIR=/tmp/fx-bench CUSTOS_FORENSICS_GEN_SECONDS=60 \
//	  go test -run TestGenerateBenchSet -timeout 10m ./forensics/
//	CUSTOS_FORENSICS_BENCH_DIR=/tmp/fx-bench \
//	  go test -run XXX -bench 'Scope|CountStar|FilterScan|FullScan' -benchtime 2x -timeout 20m ./forensics/
//
// Without CUSTOS_FORENSICS_BENCH_DIR the benchmarks use a small generated set.

// benchSet is the generated benchmark data: a Coupang-like mix with a
// quarter of the events from the forged-token attack.
func benchSet(perHour int) genConfig {
	return genConfig{Seed: 2025, Hours: 1 << 20, PerHour: perHour, Members: 4_000_000, Attack: 0.25}
}

func TestGenerateBenchSet(t *testing.T) {
	dir := os.Getenv("CUSTOS_FORENSICS_GEN_DIR")
	if dir == "" {
		t.Skip("set CUSTOS_FORENSICS_GEN_DIR (and CUSTOS_FORENSICS_GEN_SECONDS) to generate the benchmark set")
	}
	secs, _ := strconv.Atoi(os.Getenv("CUSTOS_FORENSICS_GEN_SECONDS"))
	if secs <= 0 {
		secs = 60
	}
	// CUSTOS_FORENSICS_GEN_EVENTS fixes the number of events instead of the
	// time; CUSTOS_FORENSICS_GEN_ATTACK the attack's share (0.25 by default;
	// the Coupang breach was 148 M of 150 M requests, about 0.98).
	limit, _ := strconv.Atoi(os.Getenv("CUSTOS_FORENSICS_GEN_EVENTS"))
	w, err := NewWriter(dir, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := benchSet(1_000_000)
	if a, err := strconv.ParseFloat(os.Getenv("CUSTOS_FORENSICS_GEN_ATTACK"), 64); err == nil && a > 0 {
		// The attacker's own network (Attack × 0.05) and expired tokens
		// (0.02) come on top: at most 0.93 keeps the total within 1.
		cfg.Attack = min(a, 0.93)
	}
	r := rand.New(rand.NewPCG(cfg.Seed, 1))
	start := time.Now()
	n := 0
	for ; (limit > 0 && n < limit) || (limit <= 0 && time.Since(start) < time.Duration(secs)*time.Second); n++ {
		if err := w.Write(genEvent(r, cfg, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %d events in %s (%.0f events/s)", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
}

func benchStore(b *testing.B) *Store {
	dir := os.Getenv("CUSTOS_FORENSICS_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
		w, err := NewWriter(dir, WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		cfg := benchSet(50_000)
		r := rand.New(rand.NewPCG(cfg.Seed, 1))
		for i := range 200_000 {
			if err := w.Write(genEvent(r, cfg, i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	s, err := OpenWith(dir, Options{MemoryLimit: "4GB", Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// peakRSS is the process's peak resident set (VmHWM) in MiB.
func peakRSS() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkScope scopes the stolen-key attack over every file: the broad
// scope, where most events match when the set is generated with a large
// attack share (CUSTOS_FORENSICS_GEN_ATTACK).
func BenchmarkScope(b *testing.B) { benchScope(b, "kid:k-stolen") }

// BenchmarkScopeSelective scopes the attacker's own network, a few per cent
// of the events.
func BenchmarkScopeSelective(b *testing.B) { benchScope(b, "ip:203.0.113.0/24") }

func benchScope(b *testing.B, specs ...string) {
	s := benchStore(b)
	ind, err := ParseIndicators(specs)
	if err != nil {
		b.Fatal(err)
	}
	var events int64
	for b.Loop() {
		sc, err := s.Scope(context.Background(), ind, nil)
		if err != nil {
			b.Fatal(err)
		}
		events = sc.Exposures + sc.Attempts
		b.ReportMetric(float64(sc.Subjects), "subjects")
		if path := os.Getenv("CUSTOS_FORENSICS_BENCH_DUMP"); path != "" {
			dumpScope(b, sc, path)
		}
		sc.Close()
	}
	b.ReportMetric(float64(events), "matched-events")
	b.ReportMetric(peakRSS(), "peak-rss-MiB")
}

// BenchmarkCountStar is the ceiling: DuckDB's plain count(*) over the same files.
func BenchmarkCountStar(b *testing.B) {
	s := benchStore(b)
	var n int64
	for b.Loop() {
		_, rows, err := s.SQL(context.Background(), "SELECT count(*) FROM events")
		if err != nil {
			b.Fatal(err)
		}
		n = rows[0][0].(int64)
	}
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(peakRSS(), "peak-rss-MiB")
}

// BenchmarkFilterScan is the honest ceiling: count(*) of the events the
// scope's indicator selects (count(*) alone is answered from footers).
func BenchmarkFilterScan(b *testing.B) {
	s := benchStore(b)
	var n int64
	for b.Loop() {
		_, rows, err := s.SQL(context.Background(), "SELECT count(*) FROM events WHERE token_kid = 'k-stolen'")
		if err != nil {
			b.Fatal(err)
		}
		n = rows[0][0].(int64)
	}
	b.ReportMetric(float64(n), "matched-events")
	b.ReportMetric(peakRSS(), "peak-rss-MiB")
}

// BenchmarkFullScan reads every column a scope reads for the selected
// events, without grouping: the scan cost alone.
func BenchmarkFullScan(b *testing.B) {
	s := benchStore(b)
	for b.Loop() {
		if _, _, err := s.SQL(context.Background(), `SELECT count(*), max(time), max(subject_id), bool_or(subject_text),
			max(src_ip4), max(route), max(country), max(asn), max(reason), max(data_class_set), max(status), max(verdict)
			FROM events WHERE token_kid = 'k-stolen'`); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(peakRSS(), "peak-rss-MiB")
}

// dumpScope writes the scope's JSON and a SHA-256 over its whole notification
// list, so that two builds' answers on the same files can be compared.
func dumpScope(b *testing.B, sc *Scope, path string) {
	js, err := json.Marshal(sc)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	if err := sc.Each(context.Background(), func(e Exposure) error {
		fmt.Fprintf(h, "%s %t %v %d %d\n", e.Subject, e.Member, e.DataClasses, e.First.UnixMicro(), e.Last.UnixMicro())
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	out := fmt.Sprintf("%s\nnotification-list-sha256 %x\n", js, h.Sum(nil))
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		b.Fatal(err)
	}
}
