package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMarshalEntryMatchesJSON(t *testing.T) {
	for name, tc := range map[string]struct {
		kind string
		body string
	}{
		"ok/plain":   {"key.rotate", `{"kid":"k1"}`},
		"ok/escaped": {`a"<b>&`, `[1,2]`},
	} {
		at := time.Date(2025, 11, 29, 8, 0, 0, 123456789, time.FixedZone("x", 3600))
		got, err := marshalEntry(tc.kind, at, []byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, _ := json.Marshal(Entry{V: Version, Kind: tc.kind, Time: at.UTC(), Body: json.RawMessage(tc.body)})
		if string(got) != string(want) {
			t.Fatalf("%s: %s, want %s", name, got, want)
		}
		k, err := entryKind(got)
		if err != nil || string(k) != tc.kind {
			t.Fatalf("%s: entryKind %q %v", name, k, err)
		}
	}
	if _, err := entryKind([]byte(`{"v":2,"kind":"x","time":"2025-01-01T00:00:00Z","body":{}}`)); err == nil {
		t.Fatal("fail/v2: accepted")
	}
}

// TestEncodeEntries: the batched encoder gives byte for byte what
// marshalEntry gives for a json.Marshal'ed body, and the entries' leaf hashes.
func TestEncodeEntries(t *testing.T) {
	at := time.Date(2025, 11, 29, 8, 0, 0, 5, time.UTC)
	vs := []any{
		map[string]any{"b": "<&>", "a": []int{1, 2}, "c": nil},
		json.RawMessage(` { "x" : 1 } `),
		"plain",
		struct {
			K string `json:"k"`
			N int    `json:"n,omitempty"`
		}{K: "\u2028 \"q\""},
		time.Unix(0, 0).UTC(),
	}
	data, leaves, err := encodeEntries(`k"<`, at, vs)
	if err != nil || len(data) != len(vs) || len(leaves) != len(vs) {
		t.Fatalf("ok/many: %v %d %d", err, len(data), len(leaves))
	}
	for i, v := range vs {
		body, _ := json.Marshal(v)
		want, _ := marshalEntry(`k"<`, at, body)
		if string(data[i]) != string(want) {
			t.Fatalf("ok/%d: %s, want %s", i, data[i], want)
		}
		if leaves[i] != sha256.Sum256(append([]byte{0}, want...)) {
			t.Fatalf("ok/%d: wrong leaf hash", i)
		}
		if _, err := ParseEntry(data[i]); err != nil {
			t.Fatalf("ok/%d: %v", i, err)
		}
	}
	data[0] = append(data[0], 'x') // each entry has its own capacity
	if data[1][0] != '{' {
		t.Fatal("ok/cap: appending to one entry overwrote the next")
	}
	for name, tc := range map[string]struct {
		kind string
		vs   []any
		want error
	}{
		"fail/empty-kind":  {"", []any{1}, ErrBadEntry},
		"fail/too-large":   {"k", []any{1, strings.Repeat("x", MaxEntrySize)}, ErrTooLarge},
		"fail/bad-raw":     {"k", []any{json.RawMessage(`{`)}, nil},
		"fail/unsupported": {"k", []any{func() {}}, nil},
	} {
		_, _, err := encodeEntries(tc.kind, at, tc.vs)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestAppendManyAndHistory(t *testing.T) {
	k := newTestKey(t)
	dir := t.TempDir()
	l := openTestLog(t, dir, k)
	vs := make([]any, 700)
	for i := range vs {
		vs[i] = i
	}
	idx, err := l.appendMany(context.Background(), "test.many", vs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(idx); i++ {
		if idx[i] != idx[i-1]+1 {
			t.Fatalf("indices not in order: %v", idx[i-1:i+1])
		}
	}
	time.Sleep(250 * time.Millisecond) // a checkpoint at 700
	if err := l.AppendMany(context.Background(), "test.many", vs[:10]); err != nil {
		t.Fatal(err)
	}
	l.Close(context.Background())
	hist, err := os.ReadDir(filepath.Join(dir, checkpointsDir))
	if err != nil || len(hist) < 3 { // 0, 700, 710
		t.Fatalf("history: %v %d", err, len(hist))
	}
	for _, h := range hist {
		old, _ := os.ReadFile(filepath.Join(dir, checkpointsDir, h.Name()))
		n, _ := strconv.ParseUint(h.Name(), 10, 64)
		if got, ok := checkpointSize(old); !ok || got != n {
			t.Fatalf("history file %s holds size %d", h.Name(), got)
		}
		res, err := Verify(context.Background(), dir, k.verifier, old)
		if err != nil || res.Size != 710 {
			t.Fatalf("ok/since-%s: %v %d", h.Name(), err, res.Size)
		}
	}
}

// TestStalePartialsRemoved: once a bundle or tile is full, its partial
// versions are deleted; those of the new right edge stay.
func TestStalePartialsRemoved(t *testing.T) {
	k := newTestKey(t)
	dir := t.TempDir()
	l := openTestLog(t, dir, k)
	for _, n := range []int{100, 50, 300} {
		vs := make([]any, n)
		for i := range vs {
			vs[i] = i
		}
		if err := l.AppendMany(context.Background(), "test.stale", vs); err != nil {
			t.Fatal(err)
		}
	}
	l.Close(context.Background()) // waits for the clean-up after the last batch
	for p, want := range map[string]bool{
		"tile/entries/000.p": false, "tile/0/000.p": false,
		"tile/entries/001.p": true, "tile/0/001.p": true,
	} {
		if _, err := os.Stat(filepath.Join(dir, p)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", p, err == nil, want)
		}
	}
	if res, err := Verify(context.Background(), dir, k.verifier, nil); err != nil || res.Size != 450 {
		t.Fatalf("Verify: %v size %d", err, res.Size)
	}
}

// TestReadOnlyFailsClosed: with the log's state unwritable, Open and Append
// return errors (Tessera's POSIX driver panicked on its lock file here).
func TestReadOnlyFailsClosed(t *testing.T) {
	k := newTestKey(t)
	t.Run("fail/open-state-is-a-file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, stateDir), []byte("not a directory"))
		if l, err := Open(context.Background(), dir, k.signer, fastOpts); err == nil {
			l.Close(context.Background())
			t.Fatal("Open succeeded without a writable state directory")
		}
	})
	t.Run("fail/second-writer", func(t *testing.T) {
		dir := t.TempDir()
		openTestLog(t, dir, k)
		if l, err := Open(context.Background(), dir, k.signer, fastOpts); err == nil {
			l.Close(context.Background())
			t.Fatal("two writers on one log")
		}
	})
	t.Run("fail/immutable-state", func(t *testing.T) {
		dir := t.TempDir()
		l := openTestLog(t, dir, k)
		if err := l.Append(context.Background(), "key.rotate", map[string]string{"kid": "k1"}); err != nil {
			t.Fatal(err)
		}
		sd := filepath.Join(dir, stateDir)
		if out, err := exec.Command("chattr", "+i", sd).CombinedOutput(); err != nil {
			t.Skipf("chattr +i unavailable here (%v: %s); fail/open-state-is-a-file covers root", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", sd).Run() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Append(ctx, "key.rotate", map[string]string{"kid": "k2"}); err == nil {
			t.Fatal("Append succeeded with read-only tree state")
		}
		exec.Command("chattr", "-i", sd).Run()
		if err := l.Append(context.Background(), "key.rotate", map[string]string{"kid": "k3"}); err != nil {
			t.Fatalf("Append after recovery: %v", err)
		}
		l.Close(context.Background())
		if res, err := Verify(context.Background(), dir, k.verifier, nil); err != nil || res.Size != 2 {
			t.Fatalf("Verify after recovery: %v size %d", err, res.Size)
		}
	})
}

// TestVerifyLeavesSourceUnchanged: Verify hashes entries inside its read
// buffers; bytes a source hands out (here, an in-memory copy of the log)
// must stay as they were, so that checking twice gives the same answer.
func TestVerifyLeavesSourceUnchanged(t *testing.T) {
	k := newTestKey(t)
	dir := buildLog(t, k, 600)
	src := memSource{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		src[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Verify(context.Background(), dir, k.verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		root, kinds, m, err := rebuild(context.Background(), src, want.Size, nil)
		if err != nil || m != nil || string(root[:]) != string(want.Root) || kinds["test.entry"] != 600 {
			t.Fatalf("round %d: %v %v root %x kinds %v", i, err, m, root, kinds)
		}
	}
	for p, b := range src {
		if disk, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p))); string(disk) != string(b) {
			t.Fatalf("%s changed in the source", p)
		}
	}
}

// TestCloseCoversAcknowledged: Close, while appenders are busy, publishes a
// checkpoint that covers every entry acknowledged to them.
func TestCloseCoversAcknowledged(t *testing.T) {
	k := newTestKey(t)
	for round := range 5 {
		dir := t.TempDir()
		l, err := Open(context.Background(), dir, k.signer, fastOpts)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var maxIdx int64 = -1
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vs := make([]any, 1+g*7)
				for i := range vs {
					vs[i] = i
				}
				for {
					idx, err := l.appendMany(context.Background(), "test.close", vs)
					if err != nil {
						return
					}
					mu.Lock()
					maxIdx = max(maxIdx, int64(idx[len(idx)-1]))
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(20+10*round) * time.Millisecond)
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		cp, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
		size, ok := checkpointSize(cp)
		if !ok || int64(size) <= maxIdx {
			t.Fatalf("round %d: checkpoint size %d, highest acknowledged index %d", round, size, maxIdx)
		}
		if res, err := Verify(context.Background(), dir, k.verifier, nil); err != nil || res.Size != size {
			t.Fatalf("round %d: Verify: %v size %d", round, err, res.Size)
		}
	}
}
