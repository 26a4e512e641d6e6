package sink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/custos-dev/custos/detect"
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-Custos-Signature"

// Webhook defaults.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultTimeout    = 10 * time.Second
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("sink closed")

// WebhookConfig configures a webhook sink.
type WebhookConfig struct {
	URL        string        `yaml:"url"`
	Secret     []byte        `yaml:"-"`     // HMAC key; required unless Slack
	Slack      bool          `yaml:"slack"` // body {"text": …}, no signature
	SpoolDir   string        `yaml:"spool_dir"`
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// MaxAttempts moves an alert to the dead-letter file after that many
	// failed attempts; 0 retries transient failures for ever. Refusals
	// (4xx other than 408 and 429) go there at once.
	MaxAttempts int          `yaml:"max_attempts"`
	Client      *http.Client `yaml:"-"`
}

// Webhook posts alerts to a URL. Send appends the alert to a spool file
// (synced to disk) and returns; a background loop delivers the spool in
// order, retrying with exponential backoff, so alerts survive a receiver
// that is down for minutes and a restart of custos.
type Webhook struct {
	cfg   WebhookConfig
	mu    sync.Mutex
	spool *os.File
	wake  chan struct{}
	done  chan struct{}
	stop  context.CancelFunc
	err   error
}

// NewWebhook opens (or resumes) the spool in cfg.SpoolDir and starts delivering.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.URL == "" || cfg.SpoolDir == "" {
		return nil, errors.New("webhook needs a url and a spool_dir")
	}
	if !cfg.Slack && len(cfg.Secret) == 0 {
		return nil, errors.New("webhook needs a secret to sign with")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create spool: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(cfg.SpoolDir, "spool.jsonl"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open spool: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Webhook{cfg: cfg, spool: f, wake: make(chan struct{}, 1), done: make(chan struct{}), stop: cancel}
	go w.loop(ctx)
	return w, nil
}

// Send spools a for delivery.
func (w *Webhook) Send(a detect.Alert) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("failed to encode alert: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spool == nil {
		return ErrClosed
	}
	if _, err := w.spool.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("failed to spool alert: %w", err)
	}
	if err := w.spool.Sync(); err != nil {
		return fmt.Errorf("failed to spool alert: %w", err)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close stops delivery; undelivered alerts stay in the spool for the next start.
func (w *Webhook) Close() error {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spool == nil {
		return nil
	}
	err := w.spool.Close()
	w.spool = nil
	return err
}

// Pending reports how many spooled alerts are not yet delivered.
func (w *Webhook) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	off := w.offset()
	f, err := os.Open(filepath.Join(w.cfg.SpoolDir, "spool.jsonl"))
	if err != nil {
		return 0
	}
	defer f.Close()
	_, _ = f.Seek(off, io.SeekStart)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
	}
	return n
}

func (w *Webhook) offsetPath() string { return filepath.Join(w.cfg.SpoolDir, "spool.offset") }

func (w *Webhook) offset() int64 {
	b, err := os.ReadFile(w.offsetPath())
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return n
}

func (w *Webhook) setOffset(n int64) error {
	tmp := w.offsetPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(n, 10)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, w.offsetPath())
}

// next returns the spooled line at the offset, or nil when all is delivered.
// A fully delivered spool is truncated.
func (w *Webhook) next() ([]byte, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	off := w.offset()
	st, err := w.spool.Stat()
	if err != nil {
		return nil, 0, err
	}
	if off >= st.Size() {
		if st.Size() > 0 {
			if err := w.spool.Truncate(0); err != nil {
				return nil, 0, err
			}
			if err := w.setOffset(0); err != nil {
				return nil, 0, err
			}
		}
		return nil, 0, nil
	}
	f, err := os.Open(w.spool.Name())
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, 0, err
	}
	line, err := bufio.NewReaderSize(f, 64*1024).ReadBytes('\n')
	if err != nil {
		return nil, 0, nil // a partial last line is still being written
	}
	return line[:len(line)-1], off + int64(len(line)), nil
}

func (w *Webhook) loop(ctx context.Context) {
	defer close(w.done)
	backoff := w.cfg.MinBackoff
	attempts := 0
	for {
		line, end, err := w.next()
		if err == nil && line == nil {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			case <-time.After(time.Second):
			}
			continue
		}
		if err == nil {
			var retry bool
			retry, err = w.post(ctx, line)
			attempts++
			if err == nil || !retry || (w.cfg.MaxAttempts > 0 && attempts >= w.cfg.MaxAttempts) {
				if err != nil {
					w.deadLetter(line, err)
				}
				w.mu.Lock()
				_ = w.setOffset(end)
				w.mu.Unlock()
				backoff, attempts = w.cfg.MinBackoff, 0
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
}

// post delivers one spooled alert; retry says whether a failure is transient.
func (w *Webhook) post(ctx context.Context, line []byte) (retry bool, err error) {
	body := line
	if w.cfg.Slack {
		var a detect.Alert
		if err := json.Unmarshal(line, &a); err != nil {
			return false, err
		}
		body, _ = json.Marshal(map[string]string{"text": SlackText(a)})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(w.cfg.Secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.cfg.Secret, body))
	}
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return false, fmt.Errorf("webhook refused with %d", resp.StatusCode)
}

func (w *Webhook) deadLetter(line []byte, cause error) {
	f, err := os.OpenFile(filepath.Join(w.cfg.SpoolDir, "dead-letter.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	b, _ := json.Marshal(map[string]any{"error": cause.Error(), "alert": json.RawMessage(line)})
	_, _ = f.Write(append(b, '\n'))
	_ = f.Sync()
}

// Sign returns the signature header value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header value in constant time.
func Verify(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// SlackText is the one-line message of a Slack-compatible webhook.
func SlackText(a detect.Alert) string {
	return fmt.Sprintf("[%s] %s on %s: %s (%d events, first %s, incident %s)",
		a.Severity, a.Rule, a.Entity, a.Summary, a.Count, a.FirstSeen.UTC().Format(time.RFC3339), a.Incident)
}

var _ Sink = (*Webhook)(nil)
