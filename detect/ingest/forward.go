package ingest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// ForwardReport is what [Forward] did with a log.
type ForwardReport struct {
	Lines     int         `json:"lines"`
	Events    int         `json:"events"`
	Malformed int         `json:"malformed"`
	Errors    []LineError `json:"errors,omitempty"` // the first 100
	Batches   int         `json:"batches"`
	// Accepted and NotIssued are the server's counts: events it took and
	// tokens its ledger says it never issued.
	Accepted  int `json:"accepted"`
	NotIssued int `json:"not_issued"`
}

// maxForwardBatch bounds the bytes of one batch, whatever batchLines says.
const maxForwardBatch = 8 << 20

// Forward reads JSON lines of format from r, reports each malformed line on
// errw and hands the good lines, unchanged, to post in batches of at most
// batchLines lines, so the receiving server runs its ledger check on the
// tokens foreign logs carry. A line longer than [MaxLine] is malformed.
func Forward(ctx context.Context, r io.Reader, format string, batchLines int, post func([]byte) (Stats, error), errw io.Writer) (ForwardReport, error) {
	var rep ForwardReport
	var batch bytes.Buffer
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		st, err := post(batch.Bytes())
		if err != nil {
			return fmt.Errorf("failed to post events (%d sent before): %w", rep.Accepted, err)
		}
		rep.Batches++
		rep.Accepted += st.Events
		rep.NotIssued += st.NotIssued
		batch.Reset()
		n = 0
		return nil
	}
	bad := func(line int, err error) {
		rep.Malformed++
		if len(rep.Errors) < maxErrors {
			rep.Errors = append(rep.Errors, LineError{Line: line, Err: err.Error()})
		}
		fmt.Fprintf(errw, "line %d: %v\n", line, err)
	}
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, tooLong, err := readLine(br)
		if len(line) > 0 || tooLong || err == nil {
			rep.Lines++
		}
		if tooLong {
			bad(rep.Lines, fmt.Errorf("%w: longer than %d bytes", ErrLine, MaxLine))
		} else if s := bytes.TrimSpace(line); len(s) > 0 {
			if _, _, perr := ParseLine(format, s); perr != nil {
				bad(rep.Lines, perr)
			} else {
				rep.Events++
				batch.Write(s)
				batch.WriteByte('\n')
				if n++; n >= batchLines || batch.Len() >= maxForwardBatch {
					if ferr := flush(); ferr != nil {
						return rep, ferr
					}
				}
			}
		}
		if err == io.EOF {
			return rep, flush()
		}
		if err != nil {
			if ferr := flush(); ferr != nil {
				return rep, errors.Join(err, ferr)
			}
			return rep, fmt.Errorf("failed to read line %d: %w", rep.Lines+1, err)
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
}
