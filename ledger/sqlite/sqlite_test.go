package sqlite

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/ledgertest"
)

var t0 = time.Unix(1_760_000_000, 0).UTC()

func randomEntry(exp time.Time) ledger.Entry {
	var tok [32]byte
	rand.Read(tok[:])
	return ledger.Entry{
		Hash: ledger.HashToken(fmt.Sprintf("%x", tok)), JTI: fmt.Sprintf("%x", tok[:16]), KID: "k1",
		Subject: "member-1", Audience: "shop-api", Client: "login", Session: "s1", ClientIP: "192.0.2.1",
		IssuedAt: t0, ExpiresAt: exp,
	}
}

func open(t testing.TB) *Backend {
	t.Helper()
	b, err := Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledger.Backend { return open(t) })
}

func TestBackend(t *testing.T) {
	ctx := context.Background()
	b := open(t)
	live, gone := randomEntry(t0.Add(time.Minute)), randomEntry(t0.Add(-time.Minute))
	many := make([]ledger.Entry, 700) // more than one INSERT chunk
	for i := range many {
		many[i] = randomEntry(t0.Add(time.Hour))
	}
	batch := append([]ledger.Entry{live, gone}, many...)
	if err := b.PutBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for i, e := range batch[1:] {
		if e.Ref != batch[i].Ref+1 || batch[0].Ref == 0 {
			t.Fatalf("refs not handed out in order: %d after %d", e.Ref, batch[i].Ref)
		}
	}
	live.Ref = batch[0].Ref
	got, err := b.Get(ctx, live.Hash)
	if err != nil || got != live {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, live)
	}
	if got, err := b.GetRef(ctx, live.Ref, live.Hash); err != nil || got != live {
		t.Fatalf("GetRef = %+v, %v; want %+v", got, err, live)
	}
	if _, err := b.GetRef(ctx, live.Ref, gone.Hash); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("GetRef with another hash = %v, want ErrNotFound", err)
	}
	if _, err := b.Get(ctx, ledger.HashToken("never")); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
	if err := b.Revoke(ctx, live.Hash, live.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	unseen := ledger.HashToken("unseen")
	if err := b.Revoke(ctx, unseen, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A repeated put must not undo a revocation.
	if err := b.PutBatch(ctx, []ledger.Entry{live}); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Get(ctx, live.Hash); !got.Revoked {
		t.Fatal("revocation lost after re-put")
	}
	seen := map[ledger.Hash]bool{}
	// A hash may come more than once; its revocation record wins.
	err = b.LoadLive(ctx, t0, func(e ledger.Entry) error { seen[e.Hash] = seen[e.Hash] || e.Revoked; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 702 || !seen[live.Hash] || !seen[unseen] {
		t.Fatalf("LoadLive returned %d entries (live revoked=%v, unseen revoked=%v); want 702", len(seen), seen[live.Hash], seen[unseen])
	}
	if _, ok := seen[gone.Hash]; ok {
		t.Fatal("LoadLive returned an expired entry")
	}
	n, err := b.DeleteExpired(ctx, t0)
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpired = %d, %v; want 1", n, err)
	}
}

func TestBackendStoresNoToken(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJtZW1iZXItMSJ9.c2lnbmF0dXJlLWJ5dGVz"
	e := randomEntry(t0.Add(time.Minute))
	e.Hash = ledger.HashToken(token)
	if err := b.PutBatch(ctx, []ledger.Entry{e}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	for _, f := range []string{path, path + "-wal"} {
		raw, _ := os.ReadFile(f)
		if len(raw) > 0 && (containsStr(raw, token) || containsStr(raw, "c2lnbmF0dXJlLWJ5dGVz")) {
			t.Fatalf("%s contains the token", f)
		}
	}
}

func containsStr(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}

// TestCrashKeepsAcknowledgedPuts runs a ledger in a child process that issues
// puts from many goroutines and prints each acknowledged hash, kills it with
// SIGKILL mid-load, reopens the database and requires every acknowledged hash
// to be live.
func TestCrashKeepsAcknowledgedPuts(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CUSTOS_LEDGER_CRASH_DIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []ledger.Hash
	sc := bufio.NewScanner(out)
	killed := false
	deadline := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		h, err := ledger.ParseHash(sc.Text())
		if err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		acked = append(acked, h)
		if !killed && len(acked) >= 3000 {
			// Mid-load: the child is still issuing from all its goroutines.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before the kill (%d acks): %v", len(acked), err)
	}
	t.Logf("child killed after %d acknowledged puts", len(acked))

	b, err := Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := ledger.New(context.Background(), b, func() time.Time { return time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	missing := 0
	for _, h := range acked {
		if st, err := l.Status(context.Background(), h); err != nil || st != ledger.Live {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged puts are not live after the crash", missing, len(acked))
	}
	if l.Index().Len() < len(acked) {
		t.Fatalf("index holds %d entries, fewer than %d acknowledged", l.Index().Len(), len(acked))
	}
}

// TestHelperProcess is the child of TestCrashKeepsAcknowledgedPuts; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("CUSTOS_LEDGER_CRASH_DIR")
	if dir == "" {
		return
	}
	b, err := Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := ledger.New(context.Background(), b, time.Now)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Add(1) < 10_000_000 {
				e := randomEntry(time.Now().Add(time.Hour))
				if err := l.Put(context.Background(), e); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString(e.Hash.String() + "\n") // unbuffered: printed means acknowledged
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// BenchmarkPut measures durable put throughput with 64 concurrent callers:
// group commit through ledger.Ledger against the baseline of one transaction
// (and one fsync) per put.
func BenchmarkPut(b *testing.B) {
	b.Run("group-commit", func(b *testing.B) {
		be := open(b)
		l, err := ledger.New(context.Background(), be, time.Now)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		b.SetParallelism(256) // 512 callers on 2 cores, like a loaded HTTP front end
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := l.Put(context.Background(), randomEntry(time.Now().Add(time.Hour))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
	})
	b.Run("commit-per-put", func(b *testing.B) {
		be := open(b)
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := be.PutBatch(context.Background(), []ledger.Entry{randomEntry(time.Now().Add(time.Hour))}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
	})
}
