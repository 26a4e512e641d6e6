package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/detect/ingest"
)

// newIngestCmd is custos ingest: an access log sent to the running server.
func newIngestCmd() *cobra.Command {
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
			rep, err := ingest.Forward(ctx, in, format, batchLines, post, cmd.ErrOrStderr())
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
	return cmd
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
