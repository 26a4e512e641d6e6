package forensics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// Writer defaults.
const (
	DefaultRowGroupRows = 128 * 1024
	DefaultPartRows     = 4 * 1024 * 1024
	DefaultMaxAge       = time.Minute
	DefaultMaxOpenHours = 3
)

// batchRows is how many rows are handed to the Parquet encoder at once.
const batchRows = 512

// WriterOptions bound the writer's memory and the delay before events become
// visible to readers. Zero values take the Default* constants.
type WriterOptions struct {
	// RowGroupRows is the number of rows buffered per open hour before a row
	// group is encoded to disk; memory is about RowGroupRows × MaxOpenHours rows.
	RowGroupRows int
	// PartRows seals a part once it holds this many rows.
	PartRows int
	// MaxAge seals a part this long after it was opened, so events become
	// visible within MaxAge (checked on Write, Tick and by Consume).
	MaxAge time.Duration
	// MaxOpenHours is how many hour partitions may have an open part; writing
	// to one more seals the least recently written.
	MaxOpenHours int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (o *WriterOptions) defaults() {
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = DefaultRowGroupRows
	}
	if o.PartRows <= 0 {
		o.PartRows = DefaultPartRows
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxOpenHours <= 0 {
		o.MaxOpenHours = DefaultMaxOpenHours
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Writer appends access events to hourly Parquet partitions. It is safe for
// concurrent use.
type Writer struct {
	dir    string
	opts   WriterOptions
	mu     sync.Mutex
	open   map[time.Time]*openPart
	closed bool

	written atomic.Uint64 // rows accepted by Write
	sealed  atomic.Uint64 // rows in sealed parts
}

// WriterStats is what a writer has done, for metrics.
type WriterStats struct {
	Written uint64 // rows accepted since the writer was made
	Sealed  uint64 // of those, rows in sealed (readable) parts
	// OldestOpen is when the oldest part not yet sealed was opened (zero when
	// none is open): its events are not yet visible to readers.
	OldestOpen time.Time
}

// Stats reports the writer's counts and the age of its oldest open part.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := WriterStats{Written: w.written.Load(), Sealed: w.sealed.Load()}
	for _, p := range w.open {
		if st.OldestOpen.IsZero() || p.opened.Before(st.OldestOpen) {
			st.OldestOpen = p.opened
		}
	}
	return st
}

// openPart is a part being written under a temporary name.
type openPart struct {
	hour     time.Time
	f        *os.File
	pw       *parquet.GenericWriter[row]
	pending  []row
	totals   totals
	inGroup  int
	rows     int
	opened   time.Time
	lastUsed time.Time
}

// NewWriter returns a writer into dir (created if missing).
func NewWriter(dir string, opts WriterOptions) (*Writer, error) {
	opts.defaults()
	if err := os.MkdirAll(filepath.Join(dir, eventsDir), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create event directory: %w", err)
	}
	return &Writer{dir: dir, opts: opts, open: map[time.Time]*openPart{}}, nil
}

// Write appends one event. It becomes visible to readers when its part is
// sealed (by size, age, Flush or Close).
func (w *Writer) Write(ev event.Access) error {
	if ev.Time.IsZero() {
		return fmt.Errorf("%w: no time (request %q)", ErrInvalidEvent, ev.RequestID)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	now := w.opts.Now()
	hour := ev.Time.UTC().Truncate(time.Hour)
	p, ok := w.open[hour]
	if !ok {
		if len(w.open) >= w.opts.MaxOpenHours {
			if err := w.sealLRU(); err != nil {
				return err
			}
		}
		var err error
		if p, err = w.openPart(hour, now); err != nil {
			return err
		}
		w.open[hour] = p
	}
	p.lastUsed = now
	p.pending = append(p.pending, toRow(&ev))
	p.totals.add(&p.pending[len(p.pending)-1])
	p.rows++
	p.inGroup++
	w.written.Add(1)
	if len(p.pending) >= batchRows {
		if err := p.drain(); err != nil {
			return w.abandon(p, err)
		}
	}
	if p.inGroup >= w.opts.RowGroupRows {
		if err := p.drain(); err != nil {
			return w.abandon(p, err)
		}
		if err := p.pw.Flush(); err != nil {
			return w.abandon(p, fmt.Errorf("failed to write row group: %w", err))
		}
		p.inGroup = 0
	}
	if p.rows >= w.opts.PartRows {
		delete(w.open, hour)
		if err := w.seal(p); err != nil {
			return err
		}
	}
	return w.sealOlderThan(now.Add(-w.opts.MaxAge))
}

// Tick seals parts older than MaxAge; call it periodically when events are sparse.
func (w *Writer) Tick() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.sealOlderThan(w.opts.Now().Add(-w.opts.MaxAge))
}

// Flush seals every open part, making all written events visible.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.sealAll()
}

// Close flushes and closes the writer.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.sealAll()
}

// Consume writes events from c until it is closed or ctx ends, sealing aged
// parts in between. It returns nil when c is closed. Use a lossless
// [event.Bus] subscription so that no event is dropped.
func (w *Writer) Consume(ctx context.Context, c <-chan event.Access) error {
	t := time.NewTicker(w.opts.MaxAge / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), w.Flush())
		case ev, ok := <-c:
			if !ok {
				return w.Flush()
			}
			if err := w.Write(ev); err != nil && !errors.Is(err, ErrInvalidEvent) {
				return err
			}
		case <-t.C:
			if err := w.Tick(); err != nil {
				return err
			}
		}
	}
}

func (w *Writer) openPart(hour, now time.Time) (*openPart, error) {
	d := hourDir(w.dir, hour)
	if err := os.MkdirAll(d, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create partition: %w", err)
	}
	f, err := os.CreateTemp(d, hiddenPrefix+partPrefix+"*"+tempSuffix)
	if err != nil {
		return nil, fmt.Errorf("failed to create part: %w", err)
	}
	pw := newParquetWriter(f)
	return &openPart{hour: hour, f: f, pw: pw, opened: now, lastUsed: now,
		pending: make([]row, 0, batchRows), totals: totals{}}, nil
}

func newParquetWriter(f *os.File) *parquet.GenericWriter[row] {
	return parquet.NewGenericWriter[row](f,
		parquet.Compression(&zstd.Codec{Level: zstd.SpeedFastest}),
		parquet.CreatedBy("custos", "forensics", ""))
}

func (p *openPart) drain() error {
	if len(p.pending) == 0 {
		return nil
	}
	if _, err := p.pw.Write(p.pending); err != nil {
		return fmt.Errorf("failed to encode events: %w", err)
	}
	clear(p.pending)
	p.pending = p.pending[:0]
	return nil
}

// abandon drops a part whose encoding failed: its temporary file is removed so
// no half file is left, and the error is returned.
func (w *Writer) abandon(p *openPart, err error) error {
	delete(w.open, p.hour)
	p.f.Close()
	os.Remove(p.f.Name())
	return err
}

// seal finishes a part and publishes it under the next free part number.
func (w *Writer) seal(p *openPart) error {
	if err := p.drain(); err != nil {
		return w.abandon(p, err)
	}
	p.pw.SetKeyValueMetadata(totalsKey, p.totals.encode())
	if err := p.pw.Close(); err != nil {
		return w.abandon(p, fmt.Errorf("failed to finish part: %w", err))
	}
	if err := p.f.Sync(); err != nil {
		return w.abandon(p, fmt.Errorf("failed to sync part: %w", err))
	}
	if err := p.f.Close(); err != nil {
		os.Remove(p.f.Name())
		return fmt.Errorf("failed to close part: %w", err)
	}
	_, err := publish(p.f.Name(), filepath.Dir(p.f.Name()))
	if err == nil {
		w.sealed.Add(uint64(p.rows))
	}
	return err
}

// publish links a finished temporary file into place as the next part-N and
// removes the temporary name. Linking fails instead of overwriting when another
// writer took the same number, so parts are never clobbered.
func publish(tmp, dir string) (string, error) {
	defer os.Remove(tmp)
	n := 0
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if k := partNum(e.Name()); k >= n {
				n = k + 1
			}
		}
	}
	for range 1000 {
		dst := filepath.Join(dir, fmt.Sprintf("%s%d%s", partPrefix, n, partSuffix))
		err := os.Link(tmp, dst)
		if err == nil {
			syncDir(dir)
			return dst, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("failed to publish part: %w", err)
		}
		n++
	}
	return "", fmt.Errorf("failed to publish part: no free part number in %s", dir)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func (w *Writer) sealLRU() error {
	var lru *openPart
	for _, p := range w.open {
		if lru == nil || p.lastUsed.Before(lru.lastUsed) {
			lru = p
		}
	}
	if lru == nil {
		return nil
	}
	delete(w.open, lru.hour)
	return w.seal(lru)
}

func (w *Writer) sealOlderThan(t time.Time) error {
	var errs []error
	for h, p := range w.open {
		if p.opened.Before(t) {
			delete(w.open, h)
			errs = append(errs, w.seal(p))
		}
	}
	return errors.Join(errs...)
}

func (w *Writer) sealAll() error {
	var errs []error
	for h, p := range w.open {
		delete(w.open, h)
		errs = append(errs, w.seal(p))
	}
	return errors.Join(errs...)
}
