package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "custos.test/audit"

type testKey struct {
	signer   note.Signer
	verifier note.Verifier
}

func newTestKey(t testing.TB) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewNoteSigner(testOrigin, priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewNoteVerifier(testOrigin, pub)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{s, v}
}

// fastOpts keeps tests quick: a short checkpoint interval.
var fastOpts = Options{BatchMaxAge: 5 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}

func openTestLog(t testing.TB, dir string, k testKey) *Log {
	t.Helper()
	l, err := Open(context.Background(), dir, k.signer, fastOpts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// buildLog appends n entries concurrently, closes the log (which publishes a
// checkpoint covering them) and returns the directory.
func buildLog(t testing.TB, k testKey, n int) string {
	t.Helper()
	dir := t.TempDir()
	l, err := Open(context.Background(), dir, k.signer, fastOpts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Append(context.Background(), "test.entry", map[string]int{"n": i})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return dir
}

func TestAppendVerify(t *testing.T) {
	k := newTestKey(t)
	for _, n := range []int{0, 1, 255, 256, 257, 1000} {
		t.Run(fmt.Sprintf("ok/%d", n), func(t *testing.T) {
			dir := buildLog(t, k, n)
			res, err := Verify(context.Background(), dir, k.verifier, nil)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Size != uint64(n) || res.Kinds["test.entry"] != uint64(n) {
				t.Fatalf("Verify: size %d kinds %v, want %d", res.Size, res.Kinds, n)
			}
		})
	}
}

func TestVerifyTampering(t *testing.T) {
	k := newTestKey(t)
	other := newTestKey(t)
	cases := []struct {
		name    string
		n       int
		tamper  func(t *testing.T, dir string)
		wantIdx int64 // -1: no TamperError expected
		wantErr error
		file    string
	}{
		{"fail/flip-byte-entry-bundle", 600, func(t *testing.T, dir string) {
			// Entry 300 is the 45th in bundle 1; flip a byte inside its JSON.
			flipInEntry(t, filepath.Join(dir, "tile/entries/001"), 44)
		}, 300, ErrTampered, "tile/entries/001"},
		{"fail/flip-byte-partial-bundle", 600, func(t *testing.T, dir string) {
			flipInEntry(t, filepath.Join(dir, "tile/entries/002.p/88"), 10)
		}, 522, ErrTampered, "tile/entries/002.p/88"},
		{"fail/truncate-entry-bundle", 600, func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, "tile/entries/000"), 100)
		}, 1, ErrBadBundle, "tile/entries/000"},
		{"fail/truncate-hash-tile", 600, func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, "tile/0/001"), 5)
		}, 256, ErrBadTile, "tile/0/001"},
		{"fail/flip-hash-tile", 600, func(t *testing.T, dir string) {
			flipAt(t, filepath.Join(dir, "tile/0/000"), 32*7+3)
		}, 7, ErrBadTile, "tile/0/000"},
		{"fail/missing-bundle", 600, func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "tile/entries/001")); err != nil {
				t.Fatal(err)
			}
		}, 256, ErrBadBundle, "tile/entries/001"},
		{"fail/forged-checkpoint", 10, func(t *testing.T, dir string) {
			forged, err := note.Sign(&note.Note{Text: testOrigin + "\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, other.signer)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "checkpoint"), forged)
		}, -1, ErrBadCheckpoint, ""},
		{"fail/edited-checkpoint", 10, func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
			b[len(testOrigin)+1] = '9' // size line
			writeFile(t, filepath.Join(dir, "checkpoint"), b)
		}, -1, ErrBadCheckpoint, ""},
		{"fail/unknown-version", 10, func(t *testing.T, dir string) {
			rewriteEntry(t, k, dir, 3, []byte(`{"v":2,"kind":"x","time":"2025-01-01T00:00:00Z","body":{}}`))
		}, 3, ErrUnknownVersion, "tile/entries/000.p/10"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := buildLog(t, k, tc.n)
			if _, err := Verify(context.Background(), dir, k.verifier, nil); err != nil {
				t.Fatalf("Verify before tampering: %v", err)
			}
			tc.tamper(t, dir)
			_, err := Verify(context.Background(), dir, k.verifier, nil)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Verify: %v, want %v", err, tc.wantErr)
			}
			var te *TamperError
			if tc.wantIdx < 0 {
				if errors.As(err, &te) {
					t.Fatalf("Verify: unexpected TamperError %v", err)
				}
				return
			}
			if !errors.As(err, &te) {
				t.Fatalf("Verify: %v is not a TamperError", err)
			}
			if te.Index != uint64(tc.wantIdx) || te.File != tc.file {
				t.Fatalf("Verify: index %d file %s, want %d %s (%v)", te.Index, te.File, tc.wantIdx, tc.file, err)
			}
		})
	}
}

// TestVerifyRootAgainstCheckpoint rewrites an entry together with its hash
// tile, so every tile agrees with the entries, under the old signed
// checkpoint: only comparing the recomputed root with the signed one can
// catch it.
func TestVerifyRootAgainstCheckpoint(t *testing.T) {
	k := newTestKey(t)
	for _, n := range []int{1, 10, 200} {
		t.Run(fmt.Sprintf("fail/%d", n), func(t *testing.T) {
			dir := buildLog(t, k, n)
			before, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
			if err != nil {
				t.Fatal(err)
			}
			rewriteEntryTiles(t, k, dir, n-1, []byte(`{"v":1,"kind":"test.entry","time":"2025-01-01T00:00:00Z","body":{"n":-1}}`), false)
			after, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
			if string(after) != string(before) {
				t.Fatal("checkpoint changed; the test must keep the old one")
			}
			_, err = Verify(context.Background(), dir, k.verifier, nil)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify: %v, want ErrTampered", err)
			}
		})
	}
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func flipAt(t *testing.T, p string, off int) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x01
	writeFile(t, p, b)
}

func truncate(t *testing.T, p string, n int) {
	t.Helper()
	if err := os.Truncate(p, int64(n)); err != nil {
		t.Fatal(err)
	}
}

// entryOffset returns the byte offset of entry k's data within a bundle.
func entryOffset(t *testing.T, b []byte, k int) (int, int) {
	t.Helper()
	off := 0
	for i := 0; ; i++ {
		n := int(b[off])<<8 | int(b[off+1])
		if i == k {
			return off + 2, n
		}
		off += 2 + n
	}
}

// flipInEntry flips a byte in the middle of entry k's body in a bundle.
func flipInEntry(t *testing.T, p string, k int) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	off, n := entryOffset(t, b, k)
	b[off+n-3] ^= 0x01 // a digit of the body's "n" value: still valid JSON
	writeFile(t, p, b)
}

// rewriteEntry replaces entry k of the first bundle and rewrites the tiles
// and checkpoint consistently, as an insider holding the key could: only
// the entry check can catch it.
func rewriteEntry(t *testing.T, k testKey, dir string, idx int, data []byte) {
	t.Helper()
	rewriteEntryTiles(t, k, dir, idx, data, true)
}

// rewriteEntryTiles replaces entry idx of the first (partial) bundle and its
// level-0 hash tile consistently; with resign it also signs a new checkpoint
// over the new root, without it the old signed checkpoint stays.
func rewriteEntryTiles(t *testing.T, k testKey, dir string, idx int, data []byte, resign bool) {
	t.Helper()
	ctx := context.Background()
	res, err := Verify(ctx, dir, k.verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("tile/entries/000.p/%d", res.Size))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := parseBundle(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries[idx] = data
	var out []byte
	var tile []byte
	h := sha256.New()
	var leaves []node
	for _, e := range entries {
		out = append(out, byte(len(e)>>8), byte(len(e)))
		out = append(out, e...)
		lh := hashLeaf(h, e)
		leaves = append(leaves, lh)
		tile = append(tile, lh[:]...)
	}
	writeFile(t, p, out)
	writeFile(t, filepath.Join(dir, fmt.Sprintf("tile/0/000.p/%d", res.Size)), tile)
	if !resign {
		return
	}
	root := rootOf(leaves)
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", testOrigin, res.Size, b64(root[:]))}, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "checkpoint"), cp)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// rootOf is the RFC 6962 root of a list of leaf hashes, the slow way.
func rootOf(leaves []node) node {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return hashChildren(rootOf(leaves[:k]), rootOf(leaves[k:]))
}

// Progress counts every entry bundle once, ending at the total.
func TestVerifyProgress(t *testing.T) {
	k := newTestKey(t)
	dir := buildLog(t, k, 1000) // four bundles of 256
	var calls, last, total uint64
	_, err := VerifyProgress(context.Background(), dir, k.verifier, nil, func(done, n uint64) {
		calls++
		if done != last+1 {
			t.Errorf("done %d after %d", done, last)
		}
		last, total = done, n
	})
	if err != nil || calls != 4 || last != 4 || total != 4 {
		t.Fatalf("err %v: %d calls, last %d of %d", err, calls, last, total)
	}
}
