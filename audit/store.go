package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
)

// Files of the writer's private state, compatible with Tessera's POSIX driver.
const (
	stateDir       = ".state"
	treeStateFile  = ".state/treeState"
	lockFile       = ".state/treeState.lock"
	versionFile    = ".state/version"
	checkpointsDir = "checkpoints" // every published checkpoint, by tree size
)

// ErrLocked is returned by Open when another writer holds the log.
var ErrLocked = errors.New("audit: log is locked by another writer")

// fileStore is a Tessera storage driver that writes the same C2SP tlog-tiles
// layout and tree state as Tessera's POSIX driver, but commits each batch as
// a group: the files of the batch are written (one goroutine per directory)
// and synced in parallel, then the tree state is replaced once. Tessera's
// POSIX driver syncs each bundle, tile and directory in turn, so its cost
// grows with the files per batch; here it grows with the bytes. A batch is acknowledged only after the tree
// state naming it is durable.
type fileStore struct {
	dir      string
	lock     *os.File
	maxSize  int
	maxAge   time.Duration
	interval time.Duration
	newCP    func(context.Context, uint64, []byte) ([]byte, error)

	qmu      sync.Mutex
	cur      *batch // collecting entries
	inflight *batch // being committed, or done
	last     int    // entries in the last batch taken, to size the next
	wake     chan struct{}
	full     chan struct{}

	pmu sync.Mutex // serialises publish

	smu       sync.RWMutex // guards size and root for readers
	size      uint64
	root      node
	edges     [][]node // per tile level, the nodes of the rightmost incomplete tile
	bundle    []byte   // the rightmost incomplete entry bundle
	dirs      map[string]bool
	published uint64
	hasCP     bool
	grown     chan struct{}

	done sync.WaitGroup
}

// batch is the group of entries committed together; every caller in it
// shares one result.
type batch struct {
	data   [][]byte // encoded entries, in order
	leaves []node   // their leaf hashes
	done   chan struct{}
	first  uint64
	err    error
}

func newBatch(size int) *batch {
	return &batch{data: make([][]byte, 0, size), leaves: make([]node, 0, size), done: make(chan struct{})}
}

// openStore locks dir for writing and loads the tree state. It fails (and
// never panics) if the directory cannot be written.
func openStore(dir string, opts Options) (*fileStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, stateDir), 0o755); err != nil {
		return nil, fmt.Errorf("failed to create log state directory: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open log lock file: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	}
	s := &fileStore{
		dir: dir, lock: lf, maxSize: int(opts.BatchMaxSize), maxAge: opts.BatchMaxAge,
		interval: opts.CheckpointInterval, cur: newBatch(0),
		wake: make(chan struct{}, 1), full: make(chan struct{}, 1), grown: make(chan struct{}, 1),
		dirs: map[string]bool{},
	}
	// Prove the directory writable now rather than at the first Append.
	if err := s.writeVersion(); err != nil {
		lf.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		lf.Close()
		return nil, err
	}
	if cp, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath)); err == nil {
		if n, ok := checkpointSize(cp); ok {
			s.published, s.hasCP = n, true
		}
	}
	return s, nil
}

func (s *fileStore) writeVersion() error {
	p := filepath.Join(s.dir, versionFile)
	if b, err := os.ReadFile(p); err == nil {
		if string(b) != "1" {
			return fmt.Errorf("log state version %q, want 1", b)
		}
		return nil
	}
	if err := writeFileAtomic(p, []byte("1")); err != nil {
		return fmt.Errorf("failed to write log state: %w", err)
	}
	return nil
}

type treeState struct {
	Size uint64 `json:"size"`
	Root []byte `json:"root"`
}

// load reads the committed tree state and the right edge of the tree (the
// incomplete tiles and bundle) from disk, and checks they agree.
func (s *fileStore) load() error {
	b, err := os.ReadFile(filepath.Join(s.dir, treeStateFile))
	if errors.Is(err, fs.ErrNotExist) {
		s.size, s.root, s.edges, s.bundle = 0, sha256.Sum256(nil), nil, nil
		return s.writeTreeState(0, s.root)
	}
	if err != nil {
		return fmt.Errorf("failed to read tree state: %w", err)
	}
	var ts treeState
	if err := json.Unmarshal(b, &ts); err != nil || len(ts.Root) != sha256.Size {
		return fmt.Errorf("failed to parse tree state %s: %v", treeStateFile, err)
	}
	ctx := context.Background()
	src := dirSource(s.dir)
	var edges [][]node
	for L := uint64(0); ts.Size>>(L*layout.TileHeight) > 0; L++ {
		c := ts.Size >> (L * layout.TileHeight)
		k := c % layout.TileWidth
		var e []node
		if k > 0 {
			raw, file, err := readPartialOrFull(ctx, src, func(p uint8) string { return layout.TilePath(L, c/layout.TileWidth, p) }, uint8(k))
			if err != nil || uint64(len(raw)) < k*sha256.Size {
				return fmt.Errorf("failed to read tile %s at tree size %d: %v", file, ts.Size, err)
			}
			e = make([]node, k, layout.TileWidth)
			for i := range e {
				copy(e[i][:], raw[i*sha256.Size:])
			}
		}
		edges = append(edges, e)
	}
	var bundle []byte
	if k := ts.Size % layout.EntryBundleWidth; k > 0 {
		bi := ts.Size / layout.EntryBundleWidth
		raw, file, err := readPartialOrFull(ctx, src, func(p uint8) string { return layout.EntriesPath(bi, p) }, uint8(k))
		if err != nil {
			return fmt.Errorf("failed to read %s at tree size %d: %w", file, ts.Size, err)
		}
		entries, err := parseBundle(raw, nil)
		if uint64(len(entries)) < k {
			return fmt.Errorf("%s has %d entries, tree size %d needs %d: %v", file, len(entries), ts.Size, k, err)
		}
		for _, e := range entries[:k] {
			bundle = append(bundle, byte(len(e)>>8), byte(len(e)))
			bundle = append(bundle, e...)
		}
	}
	if root := rootFromEdges(edges); !bytes.Equal(root[:], ts.Root) {
		return fmt.Errorf("%w: tree state root %x, tiles give %x", ErrTampered, ts.Root, root)
	}
	s.size, s.edges, s.bundle = ts.Size, edges, bundle
	copy(s.root[:], ts.Root)
	return nil
}

func (s *fileStore) writeTreeState(size uint64, root node) error {
	b, _ := json.Marshal(treeState{Size: size, Root: root[:]})
	if err := writeFileAtomic(filepath.Join(s.dir, treeStateFile), b); err != nil {
		return fmt.Errorf("failed to write tree state: %w", err)
	}
	return nil
}

// Appender implements Tessera's driver lifecycle.
func (s *fileStore) Appender(ctx context.Context, opts *tessera.AppendOptions) (*tessera.Appender, tessera.LogReader, error) {
	s.newCP = opts.CheckpointPublisher(s, nil)
	if !s.hasCP {
		if err := s.publish(ctx); err != nil {
			return nil, nil, err
		}
	}
	s.done.Add(2)
	go s.sequencer(ctx)
	go s.publisher(ctx)
	return &tessera.Appender{Add: s.add}, s, nil
}

// add queues e for the next batch: Tessera's Add, for callers of the
// tessera.Appender. Log queues its entries with enqueue, bypassing the
// tracing and metrics Tessera wraps around every single Add.
func (s *fileStore) add(_ context.Context, e *tessera.Entry) tessera.IndexFuture {
	var h node
	copy(h[:], e.LeafHash())
	b, pos := s.enqueue([][]byte{e.Data()}, []node{h})
	return func() (tessera.Index, error) {
		<-b.done
		if b.err != nil {
			return tessera.Index{}, b.err
		}
		return tessera.Index{Index: b.first + pos}, nil
	}
}

// enqueue queues entries (encoded, with their leaf hashes) for the next
// batch, together and in order. Once the batch's done is closed, the
// entries are durable at b.first+pos onwards unless b.err is set.
func (s *fileStore) enqueue(data [][]byte, leaves []node) (b *batch, pos uint64) {
	s.qmu.Lock()
	b = s.cur
	pos = uint64(len(b.data))
	b.data = append(b.data, data...)
	b.leaves = append(b.leaves, leaves...)
	n := len(b.data)
	s.qmu.Unlock()
	if pos == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if n >= s.maxSize && int(pos) < s.maxSize {
		select {
		case s.full <- struct{}{}:
		default:
		}
	}
	return b, pos
}

// flush waits until every entry queued so far is committed (or failed),
// then publishes a checkpoint covering the tree.
func (s *fileStore) flush(ctx context.Context) error {
	s.qmu.Lock()
	wait := []*batch{s.inflight}
	if len(s.cur.data) > 0 {
		wait = append(wait, s.cur)
	}
	s.qmu.Unlock()
	for _, b := range wait {
		if b == nil {
			continue
		}
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.publish(ctx)
}

// sequencer commits batches until ctx ends. While one batch is being
// written, the next one collects everything that arrives.
func (s *fileStore) sequencer(ctx context.Context) {
	defer s.done.Done()
	for {
		select {
		case <-ctx.Done():
			s.qmu.Lock()
			b := s.cur
			s.cur = newBatch(0)
			s.qmu.Unlock()
			b.err = ErrClosed
			close(b.done)
			return
		case <-s.wake:
		}
		t := time.NewTimer(s.maxAge)
		select {
		case <-t.C:
		case <-s.full:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
		}
		s.qmu.Lock()
		select {
		case <-s.full: // drop a stale "full" signal for the batch taken
		default:
		}
		b := s.cur
		s.cur = newBatch(s.last)
		s.last = len(b.data)
		s.inflight = b
		s.qmu.Unlock()
		if len(b.data) > 0 {
			var stale []string
			b.first, stale, b.err = s.sequence(b.data, b.leaves)
			close(b.done)
			// Partial files of what is now full are no longer needed:
			// readers of an older checkpoint fall back to the full file.
			for _, p := range stale {
				os.RemoveAll(p)
			}
			continue
		}
		close(b.done)
	}
}

// fileWrite is one file of a batch.
type fileWrite struct {
	path string // tlog-tiles path
	data []byte
}

// sequence assigns indices to entries, writes their bundles and the tiles
// they change, and commits the new tree state. On failure the in-memory
// state is reloaded from disk and nothing is acknowledged.
func (s *fileStore) sequence(data [][]byte, leaves []node) (first uint64, stale []string, err error) {
	first = s.size
	size := first + uint64(len(data))
	var writes []fileWrite
	var touched [8]bool // tile levels with a new right edge (8 levels hold 2^64 leaves)

	// Every bundle of the batch is a slice of one buffer.
	n := len(s.bundle)
	for _, d := range data {
		n += 2 + len(d)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, s.bundle...)
	start := 0
	for i, d := range data {
		idx := first + uint64(i)
		buf = append(buf, byte(len(d)>>8), byte(len(d)))
		buf = append(buf, d...)
		if (idx+1)%layout.EntryBundleWidth == 0 {
			writes = append(writes, fileWrite{layout.EntriesPath(idx/layout.EntryBundleWidth, 0), buf[start:len(buf):len(buf)]})
			start = len(buf)
		}
		s.addLeaf(idx, leaves[i], &writes, &touched)
	}
	bundle := buf[start:]
	if k := size % layout.EntryBundleWidth; k > 0 {
		writes = append(writes, fileWrite{layout.EntriesPath(size/layout.EntryBundleWidth, uint8(k)), bundle})
	}
	for L, t := range touched {
		if e := s.edges; t && len(e[L]) > 0 {
			c := size >> (uint64(L) * layout.TileHeight)
			writes = append(writes, fileWrite{layout.TilePath(uint64(L), c/layout.TileWidth, uint8(c%layout.TileWidth)), nodeBytes(e[L])})
		}
	}
	root := rootFromEdges(s.edges)
	err = s.commit(writes)
	if err == nil {
		err = s.writeTreeState(size, root)
	}
	if err != nil {
		if lerr := s.load(); lerr != nil {
			err = errors.Join(err, lerr)
		}
		return 0, nil, fmt.Errorf("failed to write audit log batch: %w", err)
	}
	s.smu.Lock()
	s.size, s.root, s.bundle = size, root, bundle
	s.smu.Unlock()
	select {
	case s.grown <- struct{}{}:
	default:
	}
	// Partial versions were published only for the right edge of the tree
	// before this batch: the first full bundle and the first full tile of
	// each level written now. (Partial files a crashed batch left beyond the
	// tree are never named by a checkpoint; one the tree reaches is replaced.)
	var seen [1 + 8]bool // bundles, then tiles per level
	for _, w := range writes {
		if strings.Contains(w.path, ".p/") {
			continue
		}
		k := 0
		if rest, ok := strings.CutPrefix(w.path, "tile/"); ok && !strings.HasPrefix(rest, "entries/") {
			k = 1 + int(rest[0]-'0')
		}
		if !seen[k] {
			seen[k] = true
			stale = append(stale, filepath.Join(s.dir, filepath.FromSlash(w.path))+".p")
		}
	}
	return first, stale, nil
}

// addLeaf appends leaf hash h (entry idx) to the right edge of the tree,
// queuing every tile it completes.
func (s *fileStore) addLeaf(idx uint64, h node, writes *[]fileWrite, touched *[8]bool) {
	for L := 0; ; L++ {
		if len(s.edges) <= L {
			s.edges = append(s.edges, make([]node, 0, layout.TileWidth))
		}
		s.edges[L] = append(s.edges[L], h)
		touched[L] = true
		if len(s.edges[L]) < layout.TileWidth {
			return
		}
		c := (idx + 1) >> (uint64(L) * layout.TileHeight)
		*writes = append(*writes, fileWrite{layout.TilePath(uint64(L), c/layout.TileWidth-1, 0), nodeBytes(s.edges[L])})
		h = reduce(s.edges[L]) // the edge is emptied next
		s.edges[L] = s.edges[L][:0]
	}
}

func nodeBytes(ns []node) []byte {
	b := make([]byte, 0, len(ns)*sha256.Size)
	for _, n := range ns {
		b = append(b, n[:]...)
	}
	return b
}

// rootFromEdges is the root of the tree whose right edge, per tile level,
// is edges (level 0 first): the compact range, left to right.
func rootFromEdges(edges [][]node) node {
	var rng []node
	for t := len(edges) - 1; t >= 0; t-- {
		rest := edges[t]
		for bit := 7; bit >= 0; bit-- {
			if k := 1 << bit; len(rest) >= k {
				rng = append(rng, subtreeRoot(rest[:k]))
				rest = rest[k:]
			}
		}
	}
	if len(rng) == 0 {
		return sha256.Sum256(nil)
	}
	root := rng[len(rng)-1]
	for i := len(rng) - 2; i >= 0; i-- {
		root = hashChildren(rng[i], root)
	}
	return root
}

// commit writes every file durably: temporary files written and synced in
// parallel, renamed into place, then each directory touched synced once.
func (s *fileStore) commit(writes []fileWrite) error {
	syncDirs := map[string]bool{}
	for _, w := range writes {
		d := filepath.Dir(filepath.Join(s.dir, filepath.FromSlash(w.path)))
		if err := s.ensureDir(d, syncDirs); err != nil {
			return err
		}
		syncDirs[d] = true
	}
	// Creating files in one directory from many threads only contends on
	// the directory: each directory's files are created by one goroutine.
	// Syncing them is what gains from running in parallel.
	files := make([]*pendingFile, len(writes))
	var groups [][]int
	at := map[string]int{}
	for i, w := range writes {
		d := path.Dir(w.path)
		g, ok := at[d]
		if !ok {
			g = len(groups)
			at[d] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	err := parallel(len(groups), func(g int) error {
		for _, i := range groups[g] {
			pf, err := openWrite(filepath.Join(s.dir, filepath.FromSlash(writes[i].path)), writes[i].data)
			if err != nil {
				return err
			}
			files[i] = pf
		}
		return nil
	})
	if err == nil {
		err = parallel(len(files), func(i int) error {
			err := files[i].finish()
			files[i] = nil
			return err
		})
	}
	if err != nil {
		for _, f := range files {
			if f != nil {
				f.abort()
			}
		}
		return err
	}
	dirs := make([]string, 0, len(syncDirs))
	for d := range syncDirs {
		dirs = append(dirs, d)
	}
	return parallel(len(dirs), func(i int) error {
		f, err := os.Open(dirs[i])
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

// ensureDir creates d and its missing parents, noting the directories
// whose entries changed.
func (s *fileStore) ensureDir(d string, changed map[string]bool) error {
	if s.dirs[d] {
		return nil
	}
	st, err := os.Stat(d)
	switch {
	case err == nil && st.IsDir():
	case err == nil:
		return fmt.Errorf("failed to create %s: not a directory", d)
	case errors.Is(err, fs.ErrNotExist):
		if err := s.ensureDir(filepath.Dir(d), changed); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("failed to create directory: %w", err)
		}
		changed[filepath.Dir(d)] = true
	default:
		return fmt.Errorf("failed to create %s: %w", d, err)
	}
	s.dirs[d] = true
	return nil
}

// openWrite creates path and writes b to it, unsynced. Every tlog-tiles
// path is written once, beyond the committed tree, so no reader looks at it
// until the tree state names it: the file is written in place. A path that
// exists (left by a batch that crashed before its commit) is replaced
// through a temporary file, renamed by finish. Plain system calls: an
// os.File adds a poller registration attempt and a finalizer to each of
// the hundreds of files of a batch.
func openWrite(path string, b []byte) (*pendingFile, error) {
	pf := &pendingFile{path: path}
	fd, err := retryEINTR(func() (int, error) {
		return syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o644)
	})
	if err == syscall.EEXIST {
		var f *os.File
		if f, err = os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*"); err == nil {
			pf.tmp = f.Name()
			fd, err = retryEINTR(func() (int, error) { return syscall.Dup(int(f.Fd())) })
			f.Close()
			if err != nil {
				os.Remove(pf.tmp)
			}
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: path, Err: err}
	}
	pf.fd = fd
	for len(b) > 0 {
		n, err := retryEINTR(func() (int, error) { return syscall.Write(fd, b) })
		if err != nil {
			pf.abort()
			return nil, &fs.PathError{Op: "write", Path: path, Err: err}
		}
		b = b[n:]
	}
	return pf, nil
}

type pendingFile struct {
	fd        int
	path, tmp string
}

// finish syncs and closes the file and moves a temporary into place;
// the caller syncs the directory.
func (p *pendingFile) finish() error {
	_, err := retryEINTR(func() (int, error) { return 0, syscall.Fsync(p.fd) })
	if cerr := syscall.Close(p.fd); err == nil {
		err = cerr
	}
	if err != nil {
		err = &fs.PathError{Op: "sync", Path: p.path, Err: err}
	}
	if err == nil && p.tmp != "" {
		err = os.Rename(p.tmp, p.path)
	}
	if err != nil && p.tmp != "" {
		os.Remove(p.tmp)
	}
	return err
}

func (p *pendingFile) abort() {
	syscall.Close(p.fd)
	if p.tmp != "" {
		os.Remove(p.tmp)
	}
}

// parallel runs fn(0..n-1) on a few goroutines and returns the first error.
func parallel(n int, fn func(i int) error) error {
	const workers = 32
	if n == 0 {
		return nil
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// publisher signs a new checkpoint every interval while the tree grows.
func (s *fileStore) publisher(ctx context.Context) {
	defer s.done.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.publish(ctx); err != nil && ctx.Err() == nil {
			// Retried at the next tick; Close waits for a covering checkpoint.
			continue
		}
	}
}

// publish signs the current tree if it grew since the last checkpoint and
// writes it to the checkpoint history, then as the latest checkpoint.
func (s *fileStore) publish(ctx context.Context) error {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	s.smu.RLock()
	size, root := s.size, s.root
	s.smu.RUnlock()
	if s.hasCP && size == s.published {
		return nil
	}
	cp, err := s.newCP(ctx, size, root[:])
	if err != nil {
		return fmt.Errorf("failed to sign checkpoint: %w", err)
	}
	hist := filepath.Join(s.dir, checkpointsDir)
	if err := os.MkdirAll(hist, 0o755); err != nil {
		return fmt.Errorf("failed to create checkpoint history: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(hist, strconv.FormatUint(size, 10)), cp); err != nil {
		return fmt.Errorf("failed to keep checkpoint: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, layout.CheckpointPath), cp); err != nil {
		return fmt.Errorf("failed to publish checkpoint: %w", err)
	}
	s.published, s.hasCP = size, true
	return nil
}

// close waits for the background work (its ctx must be done) and unlocks.
func (s *fileStore) close() error {
	s.done.Wait()
	return s.lock.Close()
}

// checkpointSize reads the tree size from a checkpoint without checking it.
func checkpointSize(cp []byte) (uint64, bool) {
	lines := bytes.SplitN(cp, []byte("\n"), 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(lines[1]), 10, 64)
	return n, err == nil
}

// LogReader, for Tessera.

func (s *fileStore) ReadCheckpoint(context.Context) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, layout.CheckpointPath))
}

func (s *fileStore) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	b, _, err := readPartialOrFull(ctx, dirSource(s.dir), func(p uint8) string { return layout.TilePath(level, index, p) }, p)
	return b, err
}

func (s *fileStore) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	b, _, err := readPartialOrFull(ctx, dirSource(s.dir), func(p uint8) string { return layout.EntriesPath(index, p) }, p)
	return b, err
}

func (s *fileStore) IntegratedSize(context.Context) (uint64, error) {
	s.smu.RLock()
	defer s.smu.RUnlock()
	return s.size, nil
}

func (s *fileStore) NextIndex(ctx context.Context) (uint64, error) { return s.IntegratedSize(ctx) }
