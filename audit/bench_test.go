package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
)

// benchEntry is the size of a typical key-operation entry.
var benchBody = map[string]any{"kid": "k-2025-11-29-01", "actor": "staff:alice", "reason": "scheduled rotation", "n": 123456}

// BenchmarkSHA256 is the baseline: raw SHA-256 of one encoded entry.
func BenchmarkSHA256(b *testing.B) {
	data, _ := marshalEntry("key.rotate", time.Now(), mustJSON(benchBody))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
}

// BenchmarkAppend appends from many goroutines, so batches fill.
func BenchmarkAppend(b *testing.B) {
	k := newTestKey(b)
	l, err := Open(context.Background(), b.TempDir(), k.signer, Options{BatchMaxSize: 16384, BatchMaxAge: 20 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(context.Background(), "key.rotate", benchBody); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	if err := l.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendMany appends b.N entries as AppendMany calls of 1024 from
// 32 goroutines: the batched path (the digester's).
func BenchmarkAppendMany(b *testing.B) {
	k := newTestKey(b)
	l, err := Open(context.Background(), b.TempDir(), k.signer, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const group = 1024
	chunk := make([]any, group)
	for i := range chunk {
		chunk[i] = benchBody
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	b.ResetTimer()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				if err := l.AppendMany(context.Background(), "key.rotate", chunk[:n]); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for left := b.N; left > 0; left -= group {
		jobs <- min(left, group)
	}
	close(jobs)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	if err := l.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendLatency measures one caller at a time: "durable" is what
// Append waits for; "published" waits on until a checkpoint covers it.
func BenchmarkAppendLatency(b *testing.B) {
	k := newTestKey(b)
	l, err := Open(context.Background(), b.TempDir(), k.signer, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx := context.Background()
	b.Run("durable", func(b *testing.B) {
		for b.Loop() {
			if err := l.Append(ctx, "key.rotate", benchBody); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("published", func(b *testing.B) {
		for b.Loop() {
			idx, err := l.append(ctx, "key.rotate", benchBody)
			if err != nil {
				b.Fatal(err)
			}
			for {
				raw, _ := l.Checkpoint(ctx)
				var cp log.Checkpoint
				if _, err := cp.Unmarshal(noteText(raw)); err == nil && cp.Size > idx {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
}

// BenchmarkVerify verifies a log of AUDIT_BENCH_N entries (default 200000),
// built once before the timer starts. With AUDIT_BENCH_DIR set, the log is
// kept in that directory (signed with a fixed test key) and reused by later
// runs that ask for the same size, so a large log is built only once.
func BenchmarkVerify(b *testing.B) {
	n := 200000
	if s := os.Getenv("AUDIT_BENCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	k := newTestKey(b)
	dir := b.TempDir()
	if d := os.Getenv("AUDIT_BENCH_DIR"); d != "" {
		dir = d
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte("b"), 32))
		k.signer, _ = NewNoteSigner(testOrigin, priv)
		k.verifier, _ = NewNoteVerifier(testOrigin, priv.Public().(ed25519.PublicKey))
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "checkpoint")); err != nil || !bytes.HasPrefix(raw, []byte(testOrigin+"\n"+strconv.Itoa(n)+"\n")) {
		buildBenchLog(b, dir, k, n)
	}
	floor := sha256Floor(time.Second)
	b.ResetTimer()
	for b.Loop() {
		res, err := Verify(context.Background(), dir, k.verifier, nil)
		if err != nil || res.Size != uint64(n) {
			b.Fatalf("Verify: %v size %d", err, res.Size)
		}
	}
	per1 := b.Elapsed().Seconds() / float64(b.N)
	b.StopTimer()
	floor = (floor + sha256Floor(time.Second)) / 2 // before and after
	b.ReportMetric(float64(n)/per1, "entries/s")
	b.ReportMetric(floor, "sha256-floor-entries/s")
}

// sha256Floor is the same-run baseline for BenchmarkVerify: entries per
// second that all cores reach doing nothing but the SHA-256 work Verify
// needs per entry (the leaf hash of a benchmark entry and one interior
// node), from memory, measured for d.
func sha256Floor(d time.Duration) float64 {
	data, _ := marshalEntry("key.rotate", time.Now(), mustJSON(benchBody))
	leaf := append([]byte{0}, data...)
	var inner [1 + 2*sha256.Size]byte
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for time.Since(start) < d {
				for range 1000 {
					sha256.Sum256(leaf)
					sha256.Sum256(inner[:])
				}
				n += 1000
			}
			total.Add(int64(n))
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}

// buildBenchLog appends n benchmark entries to the log in dir (emptied
// first) and closes it.
func buildBenchLog(b *testing.B, dir string, k testKey, n int) {
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	l, err := Open(context.Background(), dir, k.signer, Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	chunk := make([]any, 4096)
	for i := range chunk {
		chunk[i] = benchBody
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				if err := l.AppendMany(context.Background(), "key.rotate", chunk[:m]); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for left := n; left > 0; left -= len(chunk) {
		jobs <- min(left, len(chunk))
	}
	close(jobs)
	wg.Wait()
	if err := l.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d entries in %v (%.0f entries/s)", n, time.Since(start), float64(n)/time.Since(start).Seconds())
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// noteText is the checkpoint body of a signed note (before the blank line).
func noteText(raw []byte) []byte {
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] == '\n' && raw[i+1] == '\n' {
			return raw[:i+1]
		}
	}
	return raw
}
