package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/event"
)

// Forwarder posts a standalone gateway's access events to the authority's
// POST /v1/events as JSON lines, so detection, forensics and the audit
// digests see them without the NATS bus. Events are sent in batches (up to
// MaxBatch, or whatever gathered within Window); a batch that the authority
// could not take (unreachable, 5xx, 401/403, 429) is retried with backoff, so
// events are lost only when the bus subscription feeding it overflows
// meanwhile (Subscription.Dropped counts those), or when the authority
// rejects the batch itself as bad (400, 413: Rejected counts those events).
type Forwarder struct {
	// URL is the authority's base URL; Client carries its credential.
	URL    string
	Client *http.Client
	// Others are further authority replicas: a batch that one could not take
	// is retried at the next, in turn.
	Others []string
	// MaxBatch and Window bound a batch; zero means 4096 events and 100 ms.
	MaxBatch int
	Window   time.Duration
	// OnError is told about each failed attempt (it may be nil).
	OnError func(error)

	sent, failed, rejected atomic.Uint64
	cur                    int // the authority posted to now (Run's goroutine only)
}

// target is the authority posted to now.
func (f *Forwarder) target() string {
	if f.cur == 0 || len(f.Others) == 0 {
		return f.URL
	}
	return f.Others[(f.cur-1)%len(f.Others)]
}

// Rejected is the number of events in batches the authority refused as bad.
func (f *Forwarder) Rejected() uint64 { return f.rejected.Load() }

// errRejected marks an answer that no retry can change.
type errRejected struct{ error }

// Sent is the number of events the authority has accepted.
func (f *Forwarder) Sent() uint64 { return f.sent.Load() }

// Failures is the number of failed attempts to send a batch.
func (f *Forwarder) Failures() uint64 { return f.failed.Load() }

// Run forwards batches from ch until ch is closed or ctx ends; on the way out
// it tries for up to five seconds more to send what it holds.
func (f *Forwarder) Run(ctx context.Context, ch <-chan []event.Access) {
	max, window := f.MaxBatch, f.Window
	if max <= 0 {
		max = 4096
	}
	if window <= 0 {
		window = 100 * time.Millisecond
	}
	var body bytes.Buffer
	n := 0
	enc := json.NewEncoder(&body) // one JSON document and a newline per event
	add := func(b []event.Access) {
		for i := range b {
			if err := enc.Encode(&b[i]); err == nil {
				n++
			}
		}
	}
	for {
		var first []event.Access
		var ok bool
		select {
		case <-ctx.Done():
			return
		case first, ok = <-ch:
		}
		if !ok {
			return
		}
		add(first)
		deadline := time.NewTimer(window)
	gather:
		for n < max {
			select {
			case b, ok := <-ch:
				if !ok {
					break gather
				}
				add(b)
			case <-deadline.C:
				break gather
			case <-ctx.Done():
				break gather
			}
		}
		deadline.Stop()
		f.deliver(ctx, body.Bytes(), n)
		body.Reset()
		n = 0
	}
}

// deliver posts one batch until the authority takes it; when ctx has ended
// it gets one last five-second chance.
func (f *Forwarder) deliver(ctx context.Context, body []byte, n int) {
	backoff := 100 * time.Millisecond
	for {
		actx := ctx
		var cancel context.CancelFunc = func() {}
		if ctx.Err() != nil {
			actx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		}
		err := f.post(actx, body)
		cancel()
		if err == nil {
			f.sent.Add(uint64(n))
			return
		}
		f.failed.Add(1)
		if f.OnError != nil {
			f.OnError(fmt.Errorf("forwarding %d access events: %w", n, err))
		}
		if _, bad := err.(errRejected); bad {
			f.rejected.Add(uint64(n))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if len(f.Others) > 0 {
			f.cur = (f.cur + 1) % (len(f.Others) + 1)
			if f.cur != 0 {
				continue // the next replica at once; back off after a whole round
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (f *Forwarder) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(f.target(), "/")+"/v1/events?format=custos&source=gateway", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	c := f.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch c := resp.StatusCode; {
	case c == http.StatusOK:
		return nil
	case c >= 400 && c < 500 && c != http.StatusUnauthorized && c != http.StatusForbidden &&
		c != http.StatusRequestTimeout && c != http.StatusTooManyRequests:
		return errRejected{fmt.Errorf("authority rejected the batch: %s: %s", resp.Status, bytes.TrimSpace(msg))}
	default:
		return fmt.Errorf("authority answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
}
