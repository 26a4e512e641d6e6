// Package sink delivers alerts out of custos: JSON lines to stdout or a file,
// signed webhooks with a durable spool, Slack-compatible webhooks and syslog.
package sink

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/custos-dev/custos/detect"
)

// Sink receives alerts. Send must not block detection for long: the webhook
// spools to disk and delivers in the background.
type Sink interface {
	Send(a detect.Alert) error
}

// Attach makes e deliver every new alert to s; delivery errors go to onErr.
func Attach(e *detect.Engine, s Sink, onErr func(error)) {
	e.OnAlert(func(a detect.Alert) {
		if err := s.Send(a); err != nil && onErr != nil {
			onErr(err)
		}
	})
}

// JSON writes one alert per line; with OCSF set, as an OCSF Detection Finding.
type JSON struct {
	mu   sync.Mutex
	w    io.Writer
	f    *os.File
	OCSF bool
}

// Stdout returns a sink writing JSON lines to w (os.Stdout when nil).
func Stdout(w io.Writer) *JSON {
	if w == nil {
		w = os.Stdout
	}
	return &JSON{w: w}
}

// OpenFile returns a sink appending JSON lines to path (mode 0600).
func OpenFile(path string) (*JSON, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open alert file: %w", err)
	}
	return &JSON{w: f, f: f}, nil
}

// Send writes a.
func (j *JSON) Send(a detect.Alert) error {
	var v any = a
	if j.OCSF {
		v = a.OCSF()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode alert: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("failed to write alert: %w", err)
	}
	return nil
}

// Close closes the file, if the sink owns one.
func (j *JSON) Close() error {
	if j.f != nil {
		return j.f.Close()
	}
	return nil
}

var _ Sink = (*JSON)(nil)
