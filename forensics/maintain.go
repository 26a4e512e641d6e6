package forensics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/parquet-go/parquet-go"
)

// Compact merges the parts of every hour that ended at or before before and
// has more than one part into a single part, and returns the hours compacted.
// Pass a time safely behind the writers (say, now minus an hour) so that no
// writer still adds to those hours; a part a writer adds meanwhile is kept,
// never lost. Scopes in this process wait while an hour is swapped.
func (s *Store) Compact(ctx context.Context, before time.Time) ([]time.Time, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	hours, err := listHours(s.dir)
	if err != nil {
		return nil, err
	}
	var done []time.Time
	for _, h := range hours {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if h.Hour.Add(time.Hour).After(before) || len(h.Parts) < 2 {
			continue
		}
		if err := s.compactHour(ctx, h); err != nil {
			return done, fmt.Errorf("failed to compact %s: %w", h.Dir, err)
		}
		done = append(done, h.Hour)
	}
	return done, nil
}

// compactHour writes the hour's parts into one new part (temporary name, then
// linked in), then removes the merged parts under the store's write lock.
func (s *Store) compactHour(ctx context.Context, h hourPartition) error {
	for _, p := range h.Parts {
		if _, err := checkFile(p.Path); err != nil {
			return err // never compact away a file we cannot read
		}
	}
	f, err := os.CreateTemp(h.Dir, hiddenPrefix+partPrefix+"*"+tempSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	pw := newParquetWriter(f)
	tot := totals{}
	for _, p := range h.Parts {
		if err := ctx.Err(); err != nil {
			f.Close()
			return err
		}
		if err := copyRows(pw, p.Path, tot); err != nil {
			f.Close()
			return err
		}
	}
	pw.SetKeyValueMetadata(totalsKey, tot.encode())
	if err := pw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := publish(tmp, h.Dir); err != nil {
		return err
	}
	var errs []error
	for _, p := range h.Parts {
		errs = append(errs, os.Remove(p.Path))
	}
	syncDir(h.Dir)
	return errors.Join(errs...)
}

// copyRows streams one part into pw, a row group at a time, counting the
// rows into tot.
func copyRows(pw *parquet.GenericWriter[row], path string, tot totals) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := parquet.NewGenericReader[row](f)
	defer r.Close()
	buf := make([]row, batchRows)
	inGroup := 0
	for {
		n, err := r.Read(buf)
		if n > 0 {
			for i := range buf[:n] {
				buf[i].derive() // parts from before a derived column get it
				tot.add(&buf[i])
			}
			if _, werr := pw.Write(buf[:n]); werr != nil {
				return werr
			}
			inGroup += n
			if inGroup >= DefaultRowGroupRows {
				if err := pw.Flush(); err != nil {
					return err
				}
				inGroup = 0
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", path, err)
		}
	}
}

// Retain deletes every hour partition that ended at or before olderThan,
// unless held reports an evidence hold on it (held may be nil: no holds). It
// returns the hours deleted. A partition disappears in one rename before its
// files are removed, so readers see it whole or not at all.
func (s *Store) Retain(ctx context.Context, olderThan time.Time, held func(hour time.Time) bool) ([]time.Time, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	hours, err := listHours(s.dir)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []time.Time
	for _, h := range hours {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if h.Hour.Add(time.Hour).After(olderThan) || (held != nil && held(h.Hour)) {
			continue
		}
		gone := filepath.Join(filepath.Dir(h.Dir), hiddenPrefix+"deleting-"+filepath.Base(h.Dir))
		if err := os.Rename(h.Dir, gone); err != nil {
			return removed, fmt.Errorf("failed to delete %s: %w", h.Dir, err)
		}
		if err := os.RemoveAll(gone); err != nil {
			return removed, fmt.Errorf("failed to delete %s: %w", h.Dir, err)
		}
		removed = append(removed, h.Hour)
	}
	return removed, nil
}
