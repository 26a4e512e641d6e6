package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"k8s.io/klog/v2"

	"github.com/custos-dev/custos/event"
)

func TestMain(m *testing.M) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	if os.Getenv("AUDIT_CRASH_CHILD") != "" {
		crashChild(os.Getenv("AUDIT_CRASH_CHILD"), os.Getenv("AUDIT_CRASH_ROUND"))
		return
	}
	os.Exit(m.Run())
}

func TestNoteKeys(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := NewNoteSigner("log.example/audit", priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewNoteVerifier("log.example/audit", pub)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("ok/roundtrip: %v", err)
	}
	// The key hash must match x/mod's own computation for the same key.
	ref, err := note.NewVerifier(s.(*noteSigner).VerifierKey())
	if err != nil || ref.KeyHash() != s.KeyHash() {
		t.Fatalf("ok/keyhash: %v %x %x", err, ref.KeyHash(), s.KeyHash())
	}
	_, ecPriv, _ := ed25519.GenerateKey(rand.Reader)
	for name, tc := range map[string]func() error{
		"fail/name-plus":  func() error { _, err := NewNoteSigner("a+b", ecPriv); return err },
		"fail/name-empty": func() error { _, err := NewNoteVerifier("", pub); return err },
		"fail/short-key":  func() error { _, err := NewNoteVerifier("x", pub[:5]); return err },
	} {
		if err := tc(); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v, want ErrBadKey", name, err)
		}
	}
}

// crashChild appends forever from many goroutines, printing each
// acknowledged sequence number; the parent kills it with SIGKILL.
func crashChild(dir, round string) {
	r, _ := strconv.ParseInt(round, 10, 64)
	s, _ := NewNoteSigner(testOrigin, ed25519.NewKeyFromSeed(bytes.Repeat([]byte("k"), 32)))
	l, err := Open(context.Background(), dir, s, fastOpts)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var n int64
	var wg sync.WaitGroup
	// Half the goroutines append one entry at a time, half in groups
	// (AppendMany): both must be durable once acknowledged.
	for g := range 64 {
		group := 1
		if g%2 == 1 {
			group = 1 + g%37
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				k := n + 1
				n += int64(group)
				mu.Unlock()
				var err error
				if group == 1 {
					err = l.Append(context.Background(), "test.crash", map[string]int64{"r": r, "n": k})
				} else {
					vs := make([]any, group)
					for i := range vs {
						vs[i] = map[string]int64{"r": r, "n": k + int64(i)}
					}
					err = l.AppendMany(context.Background(), "test.crash", vs)
				}
				if err != nil {
					os.Exit(4)
				}
				mu.Lock()
				for i := range int64(group) {
					fmt.Fprintln(out, k+i)
				}
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestCrashWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	dir := t.TempDir()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte("k"), 32))
	pub := priv.Public().(ed25519.PublicKey)
	s, _ := NewNoteSigner(testOrigin, priv)
	v, _ := NewNoteVerifier(testOrigin, pub)

	acked := map[int64]bool{}
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "AUDIT_CRASH_CHILD="+dir, "AUDIT_CRASH_ROUND="+strconv.Itoa(round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		want := 3000 * (round + 1)
		for len(acked) < want && sc.Scan() {
			k, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked[k+int64(round)<<32] = true
		}
		// Mid-batch: 64 appenders are in flight.
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() { // acknowledgements printed before death count too
			if k, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
				acked[k+int64(round)<<32] = true
			}
		}
		cmd.Wait()
	}
	// Reopen: the writer recovers and publishes a checkpoint covering the
	// integrated tree.
	l, err := Open(context.Background(), dir, s, fastOpts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	size, err := l.Size(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var res Result
	for {
		res, err = Verify(context.Background(), dir, v, nil)
		if err == nil && res.Size == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Verify after crash: %v (size %d, want %d)", err, res.Size, size)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.Close(context.Background())
	seen := map[int64]bool{}
	err = Scan(context.Background(), dir, v, 0, func(i uint64, e Entry) error {
		var b struct{ R, N int64 }
		if err := json.Unmarshal(e.Body, &b); err != nil {
			return err
		}
		seen[b.N+b.R<<32] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for k := range acked {
		if !seen[k] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged entries missing after crash (log has %d)", missing, len(acked), res.Size)
	}
	t.Logf("acknowledged %d, log holds %d after two SIGKILLs", len(acked), res.Size)
}

// TestAppendFailsClosed makes the log's storage refuse writes in ways that
// also stop root (chmod does not): a regular file where the tile directory
// must be, and, where the filesystem supports it, the immutable attribute.
// Append must return an error, so the caller refuses the operation.
func TestAppendFailsClosed(t *testing.T) {
	k := newTestKey(t)
	t.Run("fail/file-in-place-of-tile-dir", func(t *testing.T) {
		dir := t.TempDir()
		l := openTestLog(t, dir, k)
		writeFile(t, filepath.Join(dir, "tile"), []byte("not a directory"))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Append(ctx, "key.rotate", map[string]string{"kid": "k2"}); err == nil {
			t.Fatal("Append succeeded with unwritable tiles")
		}
	})
	t.Run("fail/immutable-tiles", func(t *testing.T) {
		dir := t.TempDir()
		l := openTestLog(t, dir, k)
		if err := l.Append(context.Background(), "key.rotate", map[string]string{"kid": "k1"}); err != nil {
			t.Fatal(err)
		}
		// chattr +i on the tile tree; .state stays writable (Tessera's
		// POSIX driver panics if it cannot open its lock files).
		if out, err := exec.Command("chattr", "-R", "+i", filepath.Join(dir, "tile")).CombinedOutput(); err != nil {
			t.Skipf("chattr +i unavailable here (%v: %s); the file-in-place case covers root", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-R", "-i", filepath.Join(dir, "tile")).Run() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Append(ctx, "key.rotate", map[string]string{"kid": "k2"}); err == nil {
			t.Fatal("Append succeeded on an immutable log")
		}
		exec.Command("chattr", "-R", "-i", filepath.Join(dir, "tile")).Run()
		// Once writable again, the log continues and verifies.
		if err := l.Append(context.Background(), "key.rotate", map[string]string{"kid": "k3"}); err != nil {
			t.Fatalf("Append after recovery: %v", err)
		}
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		res, err := Verify(context.Background(), dir, k.verifier, nil)
		if err != nil || res.Size != 2 {
			t.Fatalf("Verify after recovery: %v size %d", err, res.Size)
		}
	})
	t.Run("fail/closed", func(t *testing.T) {
		l := openTestLog(t, t.TempDir(), k)
		l.Close(context.Background())
		if err := l.Append(context.Background(), "x", 1); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append after Close: %v", err)
		}
	})
}

func TestConsistencySince(t *testing.T) {
	k := newTestKey(t)
	dir := t.TempDir()
	l, err := Open(context.Background(), dir, k.signer, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 300)
	l.Close(context.Background())
	old, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
	l, err = Open(context.Background(), dir, k.signer, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 500)
	l.Close(context.Background())
	if _, err := Verify(context.Background(), dir, k.verifier, old); err != nil {
		t.Fatalf("ok/grown: %v", err)
	}
	// A fork: same size as the latest, another root, validly signed.
	res, _ := Verify(context.Background(), dir, k.verifier, nil)
	forged, _ := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", testOrigin, res.Size, b64(make([]byte, 32)))}, k.signer)
	if _, err := Verify(context.Background(), dir, k.verifier, forged); !errors.Is(err, ErrFork) {
		t.Fatalf("fail/fork: %v", err)
	}
	bigger, _ := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", testOrigin, res.Size+1, b64(make([]byte, 32)))}, k.signer)
	if _, err := Verify(context.Background(), dir, k.verifier, bigger); !errors.Is(err, ErrRollback) {
		t.Fatalf("fail/rollback: %v", err)
	}
	smaller, _ := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", testOrigin, 100, b64(make([]byte, 32)))}, k.signer)
	if _, err := Verify(context.Background(), dir, k.verifier, smaller); !errors.Is(err, ErrFork) {
		t.Fatalf("fail/inconsistent: %v", err)
	}
}

func appendN(t testing.TB, l *Log, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Append(context.Background(), "test.entry", map[string]int{"n": i}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestProveEntryAndServe(t *testing.T) {
	k := newTestKey(t)
	dir := buildLog(t, k, 700)
	srv := httptest.NewServer(http.StripPrefix("/x", NewHandler(dir)))
	defer srv.Close()
	base := srv.URL + "/x/audit/"
	for _, loc := range []string{dir, base} {
		res, err := Verify(context.Background(), loc, k.verifier, nil)
		if err != nil || res.Size != 700 {
			t.Fatalf("ok/verify %s: %v %d", loc, err, res.Size)
		}
		for _, i := range []uint64{0, 255, 256, 699} {
			p, err := ProveEntry(context.Background(), loc, k.verifier, i)
			if err != nil {
				t.Fatalf("ok/prove %d: %v", i, err)
			}
			if err := p.Check(k.verifier); err != nil {
				t.Fatalf("ok/check %d: %v", i, err)
			}
			p.Entry = append([]byte(nil), p.Entry...)
			p.Entry[5] ^= 1
			if err := p.Check(k.verifier); !errors.Is(err, ErrTampered) {
				t.Fatalf("fail/check-edited %d: %v", i, err)
			}
		}
		if _, err := ProveEntry(context.Background(), loc, k.verifier, 700); !errors.Is(err, ErrNotPublished) {
			t.Fatalf("fail/beyond: %v", err)
		}
	}
	for path, want := range map[string]int{
		"/x/audit/checkpoint":         200,
		"/x/audit/tile/entries/000":   200,
		"/x/audit/tile/0/002.p/188":   200,
		"/x/audit/.state/treeState":   404,
		"/x/audit/vkey":               404,
		"/x/audit/tile/../checkpoint": 404,
		"/x/audit/tile/0/x":           404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestDigestProveAccess(t *testing.T) {
	k := newTestKey(t)
	dir := t.TempDir()
	l := openTestLog(t, dir, k)
	clock := time.Unix(1764403200, 0)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	d, err := NewDigester(l, now)
	if err != nil {
		t.Fatal(err)
	}
	var events []event.Access
	for i := range 37 {
		ev := event.Access{Time: time.Unix(1764403200, int64(i)), RequestID: fmt.Sprint("r", i), Verdict: event.Allow, Subject: "m-1", DataClasses: []string{"address"}}
		if i%5 == 0 {
			ev.Verdict, ev.Reason = event.Deny, event.ReasonNotIssued
		}
		events = append(events, ev)
		d.Add(ev)
		if i == 20 {
			mu.Lock()
			clock = clock.Add(time.Second)
			mu.Unlock()
		}
	}
	if err := d.Flush(context.Background(), false); err != nil { // flushes the first second
		t.Fatal(err)
	}
	if err := d.Close(context.Background()); err != nil { // and the rest
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := Verify(context.Background(), dir, k.verifier, nil)
	if err != nil || res.Kinds[KindDigest] != 4 {
		t.Fatalf("Verify: %v kinds %v, want 4 digests (2 seconds × 2 classes)", err, res.Kinds)
	}
	for i, ev := range events {
		p, err := ProveAccess(context.Background(), dir, k.verifier, ev)
		if err != nil {
			t.Fatalf("ok/prove %d: %v", i, err)
		}
		if err := p.Check(k.verifier, ev); err != nil {
			t.Fatalf("ok/check %d: %v", i, err)
		}
		other := ev
		other.Subject = "m-2"
		if err := p.Check(k.verifier, other); err == nil {
			t.Fatalf("fail/other-event %d: proof accepted", i)
		}
	}
	if _, err := ProveAccess(context.Background(), dir, k.verifier, event.Access{RequestID: "never"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fail/unknown: %v", err)
	}
	// Without the index file, proofs fall back to scanning the log.
	os.Remove(filepath.Join(dir, digestDir, sidecarIndex))
	if _, err := ProveAccess(context.Background(), dir, k.verifier, events[3]); err != nil {
		t.Fatalf("ok/no-index: %v", err)
	}
	// A torn record at the end is cut off on reopen; the rest still works.
	f, _ := os.OpenFile(filepath.Join(dir, digestDir, sidecarLeaves), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("CDR1\x06acc"))
	f.Close()
	l2 := openTestLog(t, dir, k)
	d2, err := NewDigester(l2, now)
	if err != nil {
		t.Fatalf("reopen after torn record: %v", err)
	}
	d2.Close(context.Background())
	if _, err := ProveAccess(context.Background(), dir, k.verifier, events[30]); err != nil {
		t.Fatalf("ok/after-torn: %v", err)
	}
}

func TestWitness(t *testing.T) {
	k := newTestKey(t)
	dirA := buildLog(t, k, 300)
	var mu sync.Mutex
	serve := dirA
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		d := serve
		mu.Unlock()
		NewHandler(d).ServeHTTP(w, r)
	}))
	defer srv.Close()
	set := func(d string) { mu.Lock(); serve = d; mu.Unlock() }
	var alarms []error
	w := &Witness{URL: srv.URL + "/audit/checkpoint", Verifier: k.verifier, StateFile: filepath.Join(t.TempDir(), "state"), OnAlarm: func(err error) { alarms = append(alarms, err) }}
	ctx := context.Background()
	if _, err := w.Check(ctx); err != nil {
		t.Fatalf("ok/first: %v", err)
	}
	// The log grows: consistent.
	l, _ := Open(ctx, dirA, k.signer, fastOpts)
	appendN(t, l, 200)
	l.Close(ctx)
	if cp, err := w.Check(ctx); err != nil || cp.Size != 500 {
		t.Fatalf("ok/grown: %v", err)
	}
	// Another log of the same size under the same key: a fork.
	set(buildLog(t, k, 500))
	if _, err := w.Check(ctx); !errors.Is(err, ErrFork) {
		t.Fatalf("fail/fork-same-size: %v", err)
	}
	// A bigger log that does not extend the old one: a fork.
	set(buildLog(t, k, 600))
	if _, err := w.Check(ctx); !errors.Is(err, ErrFork) {
		t.Fatalf("fail/fork-inconsistent: %v", err)
	}
	// A smaller log: rollback.
	set(buildLog(t, k, 100))
	if _, err := w.Check(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("fail/rollback: %v", err)
	}
	if len(alarms) != 3 {
		t.Fatalf("alarms: %d, want 3", len(alarms))
	}
	// The state never moved off the honest log.
	set(dirA)
	if cp, err := w.Check(ctx); err != nil || cp.Size != 500 {
		t.Fatalf("ok/back: %v", err)
	}
}

func TestHoldExport(t *testing.T) {
	k := newTestKey(t)
	dir := t.TempDir()
	l := openTestLog(t, dir, k)
	ctx := context.Background()
	appendN(t, l, 300)
	if err := l.Hold(ctx, "inc-1", "breach scoping"); err != nil {
		t.Fatal(err)
	}
	if err := l.Hold(ctx, "inc-2", "legal"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "inc-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fail/release-unknown: %v", err)
	}
	holds, err := l.Holds()
	if err != nil || len(holds) != 1 || holds[0].ID != "inc-2" {
		t.Fatalf("Holds: %v %v", holds, err)
	}
	l.Close(ctx)
	if h, _ := ReadHolds(dir); len(h) != 1 {
		t.Fatalf("ReadHolds after close: %v", h)
	}
	out := filepath.Join(t.TempDir(), "export")
	if err := Export(ctx, dir, out); err != nil {
		t.Fatalf("Export: %v", err)
	}
	res, err := Verify(ctx, out, k.verifier, nil)
	if err != nil || res.Size != 303 || res.Kinds[KindHoldPlaced] != 2 || res.Kinds[KindHoldRelease] != 1 {
		t.Fatalf("Verify export: %v %+v", err, res)
	}
	for _, f := range []string{"README.md", "FORMAT.md", "vkey", "holds.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("export lacks %s", f)
		}
	}
	vk, _ := os.ReadFile(filepath.Join(out, "vkey"))
	if _, err := note.NewVerifier(strings.TrimSpace(string(vk))); err != nil {
		t.Errorf("exported vkey: %v", err)
	}
	if err := Export(ctx, dir, out); err == nil {
		t.Error("fail/export-exists: overwrote an export")
	}
}

// memSource is an in-memory source for tests.
type memSource map[string][]byte

func (m memSource) read(_ context.Context, p string) ([]byte, error) {
	b, ok := m[p]
	if !ok {
		return nil, os.ErrNotExist
	}
	return b, nil
}

func itoa(i int) string { return strconv.Itoa(i) }
