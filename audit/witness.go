package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Witness watches a published checkpoint: each poll must be signed, and
// consistent with the last one it accepted (kept in StateFile). A smaller
// tree is a rollback; the same size with another root, or a larger tree
// that does not extend the old one, is a fork.
type Witness struct {
	URL       string        // the checkpoint URL, e.g. https://host/audit/checkpoint
	Verifier  note.Verifier // the log's checkpoint key
	StateFile string        // where the last accepted checkpoint is kept
	Client    *http.Client  // http.DefaultClient if nil
	// OnAlarm, if set, is called with every rollback or fork found.
	OnAlarm func(error)
	// OnCheck, if set, is called after every poll with its outcome (see
	// [WitnessMetrics]).
	OnCheck func(*log.Checkpoint, error)
}

// Check polls once. It returns ErrRollback or ErrFork (wrapped) on an
// alarm, after calling OnAlarm; other errors are fetch or parse failures.
// The state file only ever moves forward to a consistent checkpoint.
func (w *Witness) Check(ctx context.Context) (cp *log.Checkpoint, err error) {
	if w.OnCheck != nil {
		defer func() { w.OnCheck(cp, err) }()
	}
	return w.check(ctx)
}

func (w *Witness) check(ctx context.Context) (*log.Checkpoint, error) {
	base, ok := strings.CutSuffix(w.URL, "checkpoint")
	if !ok {
		return nil, fmt.Errorf("witness URL %q does not end in checkpoint", w.URL)
	}
	src := httpSource{base: base, c: w.Client}
	if src.c == nil {
		src.c = http.DefaultClient
	}
	raw, err := src.read(ctx, "checkpoint")
	if err != nil {
		return nil, fmt.Errorf("failed to fetch checkpoint: %w", err)
	}
	cp, err := ParseCheckpoint(raw, w.Verifier)
	if err != nil {
		return nil, w.alarm(fmt.Errorf("%s: %w", w.URL, err))
	}
	prevRaw, err := os.ReadFile(w.StateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("failed to read witness state: %w", err)
	default:
		prev, err := ParseCheckpoint(prevRaw, w.Verifier)
		if err != nil {
			return nil, fmt.Errorf("witness state %s: %w", w.StateFile, err)
		}
		if cp.Size < prev.Size {
			return nil, w.alarm(fmt.Errorf("%w: %s went from %d to %d entries", ErrRollback, w.URL, prev.Size, cp.Size))
		}
		if err := checkConsistency(ctx, src, prev, cp); err != nil {
			if errors.Is(err, ErrFork) {
				return nil, w.alarm(err)
			}
			return nil, err
		}
		if bytes.Equal(prevRaw, raw) {
			return cp, nil
		}
	}
	if err := writeFileAtomic(w.StateFile, raw); err != nil {
		return nil, fmt.Errorf("failed to save witness state: %w", err)
	}
	return cp, nil
}

func (w *Witness) alarm(err error) error {
	if w.OnAlarm != nil {
		w.OnAlarm(err)
	}
	return err
}

// Run polls every interval until ctx ends or an alarm is raised, which it
// returns. Fetch failures are retried.
func (w *Witness) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := w.Check(ctx); errors.Is(err, ErrRollback) || errors.Is(err, ErrFork) || errors.Is(err, ErrBadCheckpoint) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
