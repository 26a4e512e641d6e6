package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ErrQueueFull is returned by Send when a sink's receiver has been down long
// enough to fill its memory queue; the record is not delivered.
var ErrQueueFull = errors.New("sink queue full")

// Queue defaults for the HTTP sinks without a spool (Splunk HEC, PagerDuty).
const (
	DefaultQueue         = 10000
	DefaultBatch         = 100
	DefaultFlushInterval = time.Second
)

// Delivery configures the queue of an HTTP sink.
type Delivery struct {
	// Batch is how many records go in one request (HEC; PagerDuty sends one).
	Batch int
	// FlushInterval is how long a partial batch waits for more records.
	FlushInterval time.Duration
	// Queue bounds the records held while the receiver is down.
	Queue      int
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxAttempts drops a batch after that many failed attempts (0: retry
	// transient failures for ever). Refusals are dropped at once.
	MaxAttempts int
	// OnError hears of every failed attempt and every dropped batch. Its
	// errors never carry the sink's secret.
	OnError func(error)
	Client  *http.Client
}

func (d *Delivery) defaults(batch int) {
	d.Batch = cmp.Or(d.Batch, batch)
	d.FlushInterval = cmp.Or(d.FlushInterval, DefaultFlushInterval)
	d.Queue = cmp.Or(d.Queue, DefaultQueue)
	d.MinBackoff = cmp.Or(d.MinBackoff, DefaultMinBackoff)
	d.MaxBackoff = cmp.Or(d.MaxBackoff, DefaultMaxBackoff)
	if d.Client == nil {
		d.Client = &http.Client{Timeout: DefaultTimeout}
	}
}

// deliverFunc sends one batch; retry says whether a failure is transient.
type deliverFunc func(ctx context.Context, batch [][]byte) (retry bool, err error)

// queue holds encoded records in memory and delivers them in batches, in
// order, retrying transient failures with exponential backoff.
type queue struct {
	d       Delivery
	deliver deliverFunc
	in      chan []byte
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
	mu      sync.RWMutex
	closed  bool
}

func newQueue(d Delivery, deliver deliverFunc) *queue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &queue{d: d, deliver: deliver, in: make(chan []byte, d.Queue), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go q.loop()
	return q
}

func (q *queue) put(b []byte) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return ErrClosed
	}
	select {
	case q.in <- b:
		return nil
	default:
		return ErrQueueFull
	}
}

// close delivers what is queued, giving up after wait.
func (q *queue) close(wait time.Duration) {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		close(q.in)
		q.mu.Unlock()
		t := time.AfterFunc(wait, q.cancel)
		<-q.done
		t.Stop()
		q.cancel()
	})
}

func (q *queue) report(err error) {
	if q.d.OnError != nil {
		q.d.OnError(err)
	}
}

func (q *queue) loop() {
	defer close(q.done)
	for {
		first, ok := <-q.in
		if !ok {
			return
		}
		batch := [][]byte{first}
		timer := time.NewTimer(q.d.FlushInterval)
	fill:
		for len(batch) < q.d.Batch {
			select {
			case b, ok := <-q.in:
				if !ok {
					break fill
				}
				batch = append(batch, b)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		q.send(batch)
	}
}

func (q *queue) send(batch [][]byte) {
	backoff := q.d.MinBackoff
	for attempt := 1; ; attempt++ {
		retry, err := q.deliver(q.ctx, batch)
		if err == nil {
			return
		}
		if !retry || (q.d.MaxAttempts > 0 && attempt >= q.d.MaxAttempts) || q.ctx.Err() != nil {
			q.report(fmt.Errorf("dropped %d records after %d attempts: %w", len(batch), attempt, err))
			return
		}
		q.report(err)
		select {
		case <-q.ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, q.d.MaxBackoff)
	}
}

// retryable says whether an HTTP status is worth another attempt.
func retryable(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}
