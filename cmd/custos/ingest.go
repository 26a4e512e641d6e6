package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/detect/ingest"
)

// ingestReport is what `custos ingest` prints.
type ingestReport struct {
	Lines     int                `json:"lines"`
	Events    int                `json:"events"`
	Malformed int                `json:"malformed"`
	Errors    []ingest.LineError `json:"errors,omitempty"` // the first 100
	Batches   int                `json:"batches"`
	// Accepted and NotIssued are the server's counts: events it took and
	// tokens its ledger says it never issued.
	Accepted  int `json:"accepted"`
	NotIssued int `json:"not_issued"`
}

// lineReader yields lines without their newline; a line longer than
// ingest.MaxLine is skipped to its end and reported as tooLong.
type lineReader struct{ br *bufio.Reader }

func (l lineReader) next() (line []byte, tooLong bool, err error) {
	for {
		frag, e := l.br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > ingest.MaxLine+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if e == bufio.ErrBufferFull {
			continue
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		return line, tooLong, e
	}
}

// ingestBatches reads JSON lines of format from r, reports each malformed
// line on errw and posts the good lines, unchanged, to POST /v1/events in
// batches, so the server runs its ledger check on the tokens foreign logs carry.
func ingestBatches(ctx context.Context, r io.Reader, format string, batchLines int, post func([]byte) (ingest.Stats, error), errw io.Writer) (ingestReport, error) {
	var rep ingestReport
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
		if len(rep.Errors) < 100 {
			rep.Errors = append(rep.Errors, ingest.LineError{Line: line, Err: err.Error()})
		}
		fmt.Fprintf(errw, "line %d: %v\n", line, err)
	}
	lr := lineReader{bufio.NewReaderSize(r, 64*1024)}
	for {
		line, tooLong, err := lr.next()
		if len(line) > 0 || tooLong || err == nil {
			rep.Lines++
		}
		if tooLong {
			bad(rep.Lines, fmt.Errorf("%w: longer than %d bytes", ingest.ErrLine, ingest.MaxLine))
		} else if s := bytes.TrimSpace(line); len(s) > 0 {
			if _, _, perr := ingest.ParseLine(format, s); perr != nil {
				bad(rep.Lines, perr)
			} else {
				rep.Events++
				batch.Write(s)
				batch.WriteByte('\n')
				if n++; n >= batchLines || batch.Len() >= 8<<20 {
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

func init() {
	var f adminFlags
	var format string
	var batchLines int
	var showProgress bool
	cmd := &cobra.Command{
		Use:   "ingest FILE|- --format custos|nginx|envoy",
		Short: "Send an access log (JSON lines) to the running server's detection and forensics",
		Long: `ingest reads JSON lines of access events (custos), nginx logs (JSON, or the
default combined format) or Envoy access logs (JSON, or Envoy's default format)
from FILE (or standard input for -), reports each malformed line
with its number on standard error and posts the good lines in batches to
POST /v1/events on the running server, which checks bearer tokens the lines
carry against its issuance ledger. The server marks these events as reported
by a log ("reported":"log"): their reasons are the log's claims, so a claimed
not_issued raises reported_not_issued, never the critical not_issued alert.

Exit status 0 when events were sent, even if some lines were malformed (they
are counted); 2 when nothing could be read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case ingest.FormatCustos, ingest.FormatNginx, ingest.FormatEnvoy:
			default:
				return usageErr("--format must be custos, nginx or envoy, not %q", format)
			}
			if batchLines < 1 {
				return usageErr("--batch must be at least 1")
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			var in io.Reader = cmd.InOrStdin()
			size := int64(-1)
			if args[0] != "-" {
				fh, err := os.Open(args[0])
				if err != nil {
					return usageErr("failed to open %s: %v", args[0], err)
				}
				defer fh.Close()
				in = fh
				if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() {
					size = st.Size()
				}
			}
			if wantProgress(cmd.ErrOrStderr(), showProgress, f.json) {
				bar := byteBar(cmd.ErrOrStderr(), "ingest", size)
				defer bar.Finish()
				in = io.TeeReader(in, bar)
			}
			ctx, cancel := signalContext()
			defer cancel()
			post := func(b []byte) (ingest.Stats, error) {
				var st ingest.Stats
				err := postEvents(ctx, c, format, b, &st)
				return st, err
			}
			rep, err := ingestBatches(ctx, in, format, batchLines, post, cmd.ErrOrStderr())
			if err != nil {
				if rep.Events == 0 {
					return &exitError{2, err}
				}
				return err
			}
			if rep.Events == 0 {
				return &exitError{2, fmt.Errorf("no event could be read from %s (%d lines, %d malformed)", args[0], rep.Lines, rep.Malformed)}
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d lines: %d events sent in %d batches (%d accepted), %d malformed, %d tokens never issued\n",
				rep.Lines, rep.Events, rep.Batches, rep.Accepted, rep.Malformed, rep.NotIssued)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&format, "format", ingest.FormatCustos, "custos, nginx or envoy")
	cmd.Flags().IntVar(&batchLines, "batch", 5000, "lines per POST")
	cmd.Flags().BoolVar(&showProgress, "progress", false, "draw a progress bar on standard error (default: when it is a terminal and not --json)")
	root.AddCommand(cmd)
}

// postEvents sends a body of JSON lines to POST /v1/events?format=F.
func postEvents(ctx context.Context, c *api.Client, format string, body []byte, out *ingest.Stats) error {
	req, err := http.NewRequestWithContext(ctx, "POST", c.Base+"/v1/events?format="+url.QueryEscape(format), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("failed to reach custos at %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return api.ErrorOf(resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}
