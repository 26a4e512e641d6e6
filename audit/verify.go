package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"runtime"
	"sync"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Result is what a successful Verify established.
type Result struct {
	Origin     string            // the checkpoint's origin line
	Size       uint64            // entries covered by the checkpoint
	Root       []byte            // the recomputed (and signed) root hash
	Checkpoint []byte            // the signed checkpoint that was checked
	Kinds      map[string]uint64 // entries per kind
}

// TamperError names the first entry at which the log stops matching its
// checkpoint, and the file that shows it. It matches ErrTampered and the
// underlying cause with errors.Is.
type TamperError struct {
	Index uint64 // first affected entry index
	File  string // tlog-tiles path of the offending file, e.g. tile/entries/000
	Err   error
}

func (e *TamperError) Error() string {
	return fmt.Sprintf("audit: entry %d (%s): %v", e.Index, e.File, e.Err)
}

func (e *TamperError) Unwrap() []error { return []error{ErrTampered, e.Err} }

// ParseCheckpoint checks a signed checkpoint against v (whose name must be
// the checkpoint's origin) and returns its contents.
func ParseCheckpoint(raw []byte, v note.Verifier) (*log.Checkpoint, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: no verifier", ErrBadCheckpoint)
	}
	cp, _, _, err := log.ParseCheckpoint(raw, v.Name(), v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("%w: root hash has %d bytes", ErrBadCheckpoint, len(cp.Hash))
	}
	return cp, nil
}

// Verify checks the log at loc (a directory, or the http(s) base URL the
// log is served under): the checkpoint's signature; every entry bundle
// parses and every entry is of a known version; every hash tile matches the
// tree recomputed from the entries; the recomputed root is the signed root;
// and, if since is an earlier checkpoint, that the log is consistent with
// it. On tampering it returns a *TamperError naming the first bad index and
// file. Nothing is repaired.
func Verify(ctx context.Context, loc string, v note.Verifier, since []byte) (Result, error) {
	return VerifyProgress(ctx, loc, v, since, nil)
}

// VerifyProgress is Verify that reports, when progress is not nil, how many
// entry bundles of the total it has checked (from several goroutines, one
// call at a time).
func VerifyProgress(ctx context.Context, loc string, v note.Verifier, since []byte, progress func(done, total uint64)) (Result, error) {
	src := newSource(loc)
	raw, err := src.read(ctx, layout.CheckpointPath)
	if err != nil {
		return Result{}, fmt.Errorf("%w: failed to read %s: %v", ErrBadCheckpoint, layout.CheckpointPath, err)
	}
	cp, err := ParseCheckpoint(raw, v)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", layout.CheckpointPath, err)
	}
	var old *log.Checkpoint
	if since != nil {
		if old, err = ParseCheckpoint(since, v); err != nil {
			return Result{}, fmt.Errorf("earlier checkpoint: %w", err)
		}
		if old.Size > cp.Size {
			return Result{}, fmt.Errorf("%w: earlier checkpoint has %d entries, current %d", ErrRollback, old.Size, cp.Size)
		}
	}
	root, kinds, mismatch, err := rebuild(ctx, src, cp.Size, progress)
	if err != nil {
		return Result{}, err
	}
	rootOK := bytes.Equal(root[:], cp.Hash)
	if mismatch != nil {
		return Result{}, blame(mismatch, cp.Size, rootOK)
	}
	if !rootOK {
		return Result{}, fmt.Errorf("%w: recomputed root %x, checkpoint says %x", ErrTampered, root, cp.Hash)
	}
	if old != nil {
		if err := checkConsistency(ctx, src, old, cp); err != nil {
			return Result{}, err
		}
	}
	return Result{Origin: cp.Origin, Size: cp.Size, Root: cp.Hash, Checkpoint: raw, Kinds: kinds}, nil
}

// checkConsistency proves from the (already verified) tiles that newer
// extends older.
func checkConsistency(ctx context.Context, src source, older, newer *log.Checkpoint) error {
	if older.Size == newer.Size {
		if !bytes.Equal(older.Hash, newer.Hash) {
			return fmt.Errorf("%w: two checkpoints of size %d with roots %x and %x", ErrFork, older.Size, older.Hash, newer.Hash)
		}
		return nil
	}
	if older.Size == 0 {
		return nil
	}
	pb, err := client.NewProofBuilder(ctx, newer.Size, tileFetcher(src))
	if err != nil {
		return fmt.Errorf("failed to build consistency proof: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, older.Size, newer.Size)
	if err != nil {
		return fmt.Errorf("failed to build consistency proof: %w", err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, p, older.Hash, newer.Hash); err != nil {
		return fmt.Errorf("%w: checkpoint of size %d is not consistent with earlier size %d: %v", ErrFork, newer.Size, older.Size, err)
	}
	return nil
}

type node = [sha256.Size]byte

// bundleResult is one worker's verdict on one entry bundle.
type bundleResult struct {
	root     node         // subtree root of a full bundle
	leaves   []node       // leaf hashes of the final partial bundle
	mismatch *TamperError // level-0 tile differs from the entries
	err      error
}

// rebuild recomputes the tree of size n from the entry bundles, checks
// every hash tile on the way and returns the root.
func rebuild(ctx context.Context, src source, n uint64, progress func(done, total uint64)) (node, map[string]uint64, *TamperError, error) {
	kinds := map[string]uint64{}
	if n == 0 {
		return sha256.Sum256(nil), kinds, nil, nil
	}
	nb := (n + layout.EntryBundleWidth - 1) / layout.EntryBundleWidth
	results := make([]bundleResult, nb)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan uint64)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstBad = nb // lowest bundle index with an error
		checked  uint64
	)
	// More workers than cores: one waiting for a file that is not in the
	// page cache leaves its core to the others (Go runs at most GOMAXPROCS
	// of them at once, so this does not take more CPU).
	workers := 4 * runtime.GOMAXPROCS(0)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]uint64{}
			w := newBundleWorker()
			for i := range jobs {
				r := w.check(ctx, src, i, n, local)
				results[i] = r
				mu.Lock()
				if r.err != nil {
					firstBad = min(firstBad, i)
				}
				if checked++; progress != nil {
					progress(checked, nb)
				}
				mu.Unlock()
			}
			mu.Lock()
			for k, c := range local {
				kinds[k] += c
			}
			mu.Unlock()
		}()
	}
dispatch:
	for i := range nb {
		mu.Lock()
		stop := firstBad < i
		mu.Unlock()
		if stop {
			break
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return node{}, nil, nil, err
	}
	if firstBad < nb {
		return node{}, nil, nil, results[firstBad].err
	}
	// The lowest-index mismatch, preferring level-0 tiles: they pin a
	// single entry, a higher tile only a range of them.
	var first *TamperError
	firstLevel := uint64(0)
	note := func(level uint64, m *TamperError) {
		if m != nil && (first == nil || level < firstLevel || (level == firstLevel && m.Index < first.Index)) {
			first, firstLevel = m, level
		}
	}

	// Tile level 1 upwards: level 8T nodes, 256 per tile.
	var fullRoots []node
	for _, r := range results {
		note(0, r.mismatch)
		if r.leaves == nil {
			fullRoots = append(fullRoots, r.root)
		}
	}
	var remainders [][]node // per tile level, the nodes not in a full tile
	last := results[nb-1]
	if last.leaves != nil {
		remainders = append(remainders, last.leaves)
	} else {
		remainders = append(remainders, nil)
	}
	level := uint64(1)
	for cur := fullRoots; len(cur) > 0; level++ {
		var next []node
		full := uint64(len(cur)) / layout.TileWidth
		for j := uint64(0); j <= full; j++ {
			lo := j * layout.TileWidth
			hi := min(lo+layout.TileWidth, uint64(len(cur)))
			if lo == hi {
				break
			}
			m, err := checkTile(ctx, src, level, j, n, cur[lo:hi])
			if err != nil {
				return node{}, nil, nil, err
			}
			note(level, m)
			if hi-lo == layout.TileWidth {
				next = append(next, subtreeRoot(cur[lo:hi]))
			}
		}
		remainders = append(remainders, cur[full*layout.TileWidth:])
		cur = next
	}

	root := rootFromEdges(remainders)
	return root, kinds, first, nil
}

// checkTile compares the hash tile at (level, index) in a tree of size n
// with the recomputed nodes want. A missing or malformed tile is an error;
// a tile that differs is returned as a mismatch, to be blamed on the tile or
// on the entries below it once the root is known.
func checkTile(ctx context.Context, src source, level, index, n uint64, want []node) (mismatch *TamperError, err error) {
	mismatch, _, err = checkTileInto(ctx, src, level, index, n, want, nil)
	return mismatch, err
}

// checkTileInto is checkTile reading the tile into buf (see readBuf); it
// also returns what it read, for the caller to reuse.
func checkTileInto(ctx context.Context, src source, level, index, n uint64, want []node, buf []byte) (mismatch *TamperError, raw []byte, err error) {
	p := layout.PartialTileSize(level, index, n)
	first := index * layout.TileWidth << (level * layout.TileHeight)
	raw, file, err := readPartialOrFullInto(ctx, src, func(p uint8) string { return layout.TilePath(level, index, p) }, p, buf)
	if err != nil {
		return nil, nil, &TamperError{Index: first, File: layout.TilePath(level, index, p), Err: fmt.Errorf("%w: %v", ErrBadTile, err)}
	}
	if len(raw)%sha256.Size != 0 || len(raw) < len(want)*sha256.Size || (file == layout.TilePath(level, index, p) && len(raw) != len(want)*sha256.Size) {
		return nil, raw, &TamperError{Index: first, File: file, Err: fmt.Errorf("%w: %d bytes, want %d hashes", ErrBadTile, len(raw), len(want))}
	}
	for k, h := range want {
		if !bytes.Equal(raw[k*sha256.Size:(k+1)*sha256.Size], h[:]) {
			idx := first + uint64(k)<<(level*layout.TileHeight)
			return &TamperError{Index: idx, File: file, Err: fmt.Errorf("%w: hash %d differs from the tree recomputed from the entries", ErrBadTile, k)}, raw, nil
		}
	}
	return nil, raw, nil
}

// blame decides which side of a tile mismatch was altered: if the tree
// recomputed from the entries still has the signed root, the tile is wrong;
// otherwise the entries (and the tiles written to match them) are.
func blame(m *TamperError, n uint64, rootOK bool) *TamperError {
	if rootOK {
		return m
	}
	bundle := m.Index / layout.EntryBundleWidth
	return &TamperError{
		Index: m.Index,
		File:  layout.EntriesPath(bundle, layout.PartialTileSize(0, bundle, n)),
		Err:   fmt.Errorf("entry does not match the signed tree (its hash disagrees with %s)", m.File),
	}
}

// bundleWorker holds per-goroutine scratch space, so that checking a bundle
// allocates nothing in the common case.
type bundleWorker struct {
	bundle, tile []byte // file contents
	entries      [][]byte
	leaves       []node
}

func newBundleWorker() *bundleWorker {
	return &bundleWorker{
		bundle:  make([]byte, 0, 64<<10),
		tile:    make([]byte, 0, layout.TileWidth*sha256.Size+1),
		entries: make([][]byte, 0, layout.EntryBundleWidth),
		leaves:  make([]node, 0, layout.EntryBundleWidth),
	}
}

// check verifies entry bundle i of a tree of size n against its level-0
// tile and returns its subtree root (or leaf hashes, if partial).
func (w *bundleWorker) check(ctx context.Context, src source, i, n uint64, kinds map[string]uint64) bundleResult {
	p := layout.PartialTileSize(0, i, n)
	want := int(p)
	if p == 0 {
		want = layout.EntryBundleWidth
	}
	first := i * layout.EntryBundleWidth
	raw, file, err := readPartialOrFullInto(ctx, src, func(p uint8) string { return layout.EntriesPath(i, p) }, p, w.bundle)
	if err != nil {
		return bundleResult{err: &TamperError{Index: first, File: layout.EntriesPath(i, p), Err: fmt.Errorf("%w: %v", ErrBadBundle, err)}}
	}
	w.bundle = raw[:0]
	entries, err := parseBundle(raw, w.entries[:0])
	w.entries = entries[:0]
	if len(entries) < want {
		if err == nil {
			err = fmt.Errorf("%w: %d entries, want %d", ErrBadBundle, len(entries), want)
		}
		return bundleResult{err: &TamperError{Index: first + uint64(len(entries)), File: file, Err: err}}
	}
	if err != nil || (file == layout.EntriesPath(i, p) && len(entries) != want) {
		if err == nil {
			err = fmt.Errorf("%w: %d entries, want %d", ErrBadBundle, len(entries), want)
		}
		return bundleResult{err: &TamperError{Index: first + uint64(want), File: file, Err: err}}
	}
	leaves := w.leaves[:0]
	// Entries of one bundle are mostly of one kind: count runs, so that the
	// map (and a string for its key) is touched once per run.
	var run []byte
	var count uint64
	off := 0 // of entry k's length in raw
	for k, e := range entries[:want] {
		kind, err := entryKind(e)
		if err != nil {
			return bundleResult{err: &TamperError{Index: first + uint64(k), File: file, Err: err}}
		}
		if !bytes.Equal(kind, run) {
			if count > 0 {
				kinds[string(run)] += count
			}
			run, count = kind, 0
		}
		count++
		// The leaf hash is SHA-256(0x00 || entry). The byte before the
		// entry in the bundle is the low byte of its length, already read
		// and no longer needed: zero it and hash in place, without a copy.
		in := raw[off+1 : off+2+len(e)]
		in[0] = 0
		leaves = append(leaves, sha256.Sum256(in))
		off += 2 + len(e)
	}
	if count > 0 {
		kinds[string(run)] += count
	}
	w.leaves = leaves[:0]
	// The level-0 tile must hold exactly these leaf hashes.
	mismatch, err := w.checkTile(ctx, src, 0, i, n, leaves)
	if err != nil {
		return bundleResult{err: err}
	}
	if p != 0 {
		return bundleResult{leaves: append([]node(nil), leaves...), mismatch: mismatch}
	}
	return bundleResult{root: reduce(leaves), mismatch: mismatch}
}

// checkTile is checkTile reading into the worker's buffer.
func (w *bundleWorker) checkTile(ctx context.Context, src source, level, index, n uint64, want []node) (*TamperError, error) {
	m, raw, err := checkTileInto(ctx, src, level, index, n, want, w.tile)
	if raw != nil {
		w.tile = raw[:0]
	}
	return m, err
}

// hashLeaf is the RFC 6962 leaf hash SHA-256(0x00 || data).
func hashLeaf(h hash.Hash, data []byte) (out node) {
	h.Reset()
	h.Write([]byte{0})
	h.Write(data)
	h.Sum(out[:0])
	return out
}

// hashChildren is the RFC 6962 interior hash SHA-256(0x01 || l || r).
func hashChildren(l, r node) node {
	var b [1 + 2*sha256.Size]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[1+sha256.Size:], r[:])
	return sha256.Sum256(b[:])
}

// subtreeRoot is the root of a perfect subtree; len(nodes) is a power of two.
func subtreeRoot(nodes []node) node {
	return reduce(append([]node(nil), nodes...))
}

// reduce is subtreeRoot computed in place: it overwrites nodes.
func reduce(nodes []node) node {
	for len(nodes) > 1 {
		for k := 0; k < len(nodes)/2; k++ {
			nodes[k] = hashChildren(nodes[2*k], nodes[2*k+1])
		}
		nodes = nodes[:len(nodes)/2]
	}
	return nodes[0]
}
