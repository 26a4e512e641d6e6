// Package audit keeps custos's tamper-evident log: an append-only Merkle log on
// Tessera (C2SP tlog-tiles, signed-note checkpoints) with verification, proofs, a witness and evidence holds.
//
// # Writing
//
// [Open] a log in a directory with a checkpoint signer from key custody
// ([NewNoteSigner]), then call [Log.Append]; it returns only once the entry is
// durable, so a caller that gets an error refuses the operation (fail closed).
// [NewDigester] turns access and issuance events into per-second digest
// entries, so any one event can be proven included without the log holding it.
//
// # Checking
//
// [Verify] recomputes the tree from the entry bundles and checks every tile,
// the signed checkpoint and consistency with an earlier checkpoint.
// [ProveEntry] and [ProveAccess] make inclusion proofs; [Witness] watches a
// published checkpoint for rollback and forks. [Export] writes a
// self-contained copy that public tools can check. FORMAT.md documents the
// entry and sidecar formats.
//
// # Hand-written parts, and why
//
// The storage is a Tessera driver of this package (store.go), not Tessera's
// POSIX driver: that one syncs every bundle, tile and directory in turn, and
// no option batches them. Entries reach the driver as whole groups rather
// than through Tessera's per-entry Add (a tracing span, metrics and a future
// per entry), and are encoded with their common head built once. Log files
// are written and read with plain system calls, as an os.File costs a poller
// registration attempt and a finalizer per file; Verify reads hundreds of
// thousands of small files. docs/bench/audit.md has the measurements.
package audit

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/transparency-dev/tessera"
	"golang.org/x/mod/sumdb/note"
)

// Sentinel errors callers branch on with errors.Is.
var (
	ErrBadKey         = errors.New("audit: bad checkpoint key")
	ErrBadEntry       = errors.New("audit: malformed entry")
	ErrUnknownVersion = errors.New("audit: unknown entry version")
	ErrTooLarge       = errors.New("audit: entry too large")
	ErrBadBundle      = errors.New("audit: malformed entry bundle")
	ErrBadTile        = errors.New("audit: malformed tile")
	ErrBadCheckpoint  = errors.New("audit: bad checkpoint")
	ErrTampered       = errors.New("audit: log does not match its checkpoint")
	ErrRollback       = errors.New("audit: checkpoint rolled back")
	ErrFork           = errors.New("audit: checkpoint fork")
	ErrNotPublished   = errors.New("audit: entry not yet covered by a checkpoint")
	ErrNotFound       = errors.New("audit: not found")
	ErrClosed         = errors.New("audit: log closed")
	ErrNoVerifierKey  = errors.New("audit: no verifier key in log directory")
)

// Defaults for Options.
const (
	DefaultBatchMaxSize       = 4096
	DefaultBatchMaxAge        = 10 * time.Millisecond
	DefaultCheckpointInterval = time.Second
)

// Files this package keeps in the log directory next to Tessera's.
const (
	vkeyFile  = "vkey"       // note verifier key of the checkpoint signer
	holdsFile = "holds.json" // evidence holds
)

// Options tune a Log. The zero value uses the defaults.
type Options struct {
	// BatchMaxSize is how many waiting entries start a batch before
	// BatchMaxAge is up. Entries that arrive while a batch is being written
	// all join the next one (group commit), so batches can be larger.
	BatchMaxSize uint
	// BatchMaxAge is how long the first entry of a batch waits for others.
	BatchMaxAge time.Duration
	// CheckpointInterval is how often a new checkpoint is signed while the
	// tree grows.
	CheckpointInterval time.Duration
	// Now is the clock for entry times; time.Now if nil.
	Now func() time.Time
}

// withDefaults fills zero fields; a negative duration also takes its
// default (so cmp.Or, which replaces zero only, serves the size alone).
func (o Options) withDefaults() Options {
	o.BatchMaxSize = cmp.Or(o.BatchMaxSize, DefaultBatchMaxSize)
	if o.BatchMaxAge <= 0 {
		o.BatchMaxAge = DefaultBatchMaxAge
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Log is an open audit log. It is safe for concurrent use.
type Log struct {
	dir      string
	now      func() time.Time
	reader   tessera.LogReader
	shutdown func(context.Context) error
	cancel   context.CancelFunc
	store    *fileStore
	// The shared log (OpenMySQL) instead of store.
	appender *tessera.Appender
	db       *sql.DB
	vkey     string

	mu     sync.RWMutex // guards closed; held for reading while appending
	closed bool

	holdMu sync.Mutex
}

// verifierKeyer is implemented by signers that can name their verifier key
// (the signer from NewNoteSigner does).
type verifierKeyer interface{ VerifierKey() string }

// Open opens or creates the log in dir. Checkpoints are signed by signer,
// whose name is the log's origin. Background work runs until Close.
func Open(ctx context.Context, dir string, signer note.Signer, opts Options) (*Log, error) {
	if signer == nil {
		return nil, fmt.Errorf("%w: nil signer", ErrBadKey)
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create log directory: %w", err)
	}
	if vk, ok := signer.(verifierKeyer); ok {
		if err := writeFileAtomic(filepath.Join(dir, vkeyFile), []byte(vk.VerifierKey()+"\n")); err != nil {
			return nil, fmt.Errorf("failed to write verifier key: %w", err)
		}
	}
	store, err := openStore(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("failed to open log storage: %w", err)
	}
	// Background tasks outlive the caller's ctx; Close ends them.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ao := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(opts.BatchMaxSize, opts.BatchMaxAge).
		WithCheckpointInterval(opts.CheckpointInterval)
	_, shutdown, reader, err := tessera.NewAppender(bg, store, ao)
	if err != nil {
		cancel()
		store.close()
		return nil, fmt.Errorf("failed to open log appender: %w", err)
	}
	return &Log{
		dir: dir, now: opts.Now, reader: reader,
		shutdown: shutdown, cancel: cancel, store: store,
	}, nil
}

// Dir is the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Append records v (encoded as JSON) under kind. It returns nil only once the
// entry is durably sequenced and integrated into the tree on disk; it will be
// covered by the next checkpoint (within CheckpointInterval). On any error
// the entry must be treated as not recorded and the operation refused.
func (l *Log) Append(ctx context.Context, kind string, v any) error {
	_, err := l.append(ctx, kind, v)
	return err
}

// AppendMany records each of vs under kind, in order, as one group: they
// share the fsyncs of one batch instead of each waiting for its own. It
// returns nil only once all of them are durable; on error, treat none of them
// as recorded (some may be, which is harmless for an audit log).
func (l *Log) AppendMany(ctx context.Context, kind string, vs []any) error {
	_, err := l.appendMany(ctx, kind, vs)
	return err
}

// appendMany is AppendMany that also returns the entries' indices.
func (l *Log) appendMany(ctx context.Context, kind string, vs []any) ([]uint64, error) {
	if len(vs) == 0 {
		return []uint64{}, nil
	}
	data, leaves, err := encodeEntries(kind, l.now(), vs)
	if err != nil {
		return nil, err
	}
	if l.appender != nil {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.closed {
			return nil, ErrClosed
		}
		return l.appendShared(ctx, data)
	}
	first, err := l.appendEncoded(ctx, data, leaves)
	if err != nil {
		return nil, err
	}
	idx := make([]uint64, len(vs))
	for i := range idx {
		idx[i] = first + uint64(i)
	}
	return idx, nil
}

// append is Append that also returns the entry's index.
func (l *Log) append(ctx context.Context, kind string, v any) (uint64, error) {
	data, leaves, err := encodeEntries(kind, l.now(), []any{v})
	if err != nil {
		return 0, err
	}
	return l.appendEncoded(ctx, data, leaves)
}

// appendEncoded queues encoded entries, together and in order, for the
// storage's next batch and waits until they are durable; it returns the
// index of the first. The entries go to the driver directly rather than
// through Tessera's Add, which wraps each one in a tracing span, metrics and
// a future of its own.
func (l *Log) appendEncoded(ctx context.Context, data [][]byte, leaves []node) (uint64, error) {
	if len(data) == 0 {
		return 0, nil
	}
	if l.appender != nil {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.closed {
			return 0, ErrClosed
		}
		idx, err := l.appendShared(ctx, data)
		if err != nil {
			return 0, err
		}
		return idx[0], nil
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, ErrClosed
	}
	b, pos := l.store.enqueue(data, leaves)
	l.mu.RUnlock()
	select {
	case <-b.done:
		if b.err != nil {
			return 0, fmt.Errorf("failed to append to audit log: %w", b.err)
		}
		return b.first + pos, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("failed to append to audit log: %w", ctx.Err())
	}
}

// Checkpoint returns the latest published signed checkpoint.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read checkpoint: %w", err)
	}
	return cp, nil
}

// Size returns the number of entries durably integrated into the tree
// (which may be ahead of the latest checkpoint by up to one interval).
func (l *Log) Size(ctx context.Context) (uint64, error) {
	n, err := l.reader.IntegratedSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to read tree size: %w", err)
	}
	return n, nil
}

// Close waits until every acknowledged entry is covered by a published
// checkpoint, then stops background work. Append fails after Close.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	// Every entry queued before closed was set is in the storage's queue:
	// wait for it, then publish a checkpoint that covers it.
	var err error
	if l.store != nil {
		err = l.store.flush(ctx)
	}
	err = errors.Join(err, l.shutdown(ctx))
	l.cancel()
	if l.store != nil {
		err = errors.Join(err, l.store.close())
	}
	if l.db != nil {
		err = errors.Join(err, l.db.Close())
	}
	if err != nil {
		return fmt.Errorf("failed to shut down audit log: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path via a synced temporary file and rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
