// Package bench measures the whole system over loopback HTTP (issuance through
// the authority, the gateway against a bare reverse proxy) with its own load generator.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoRequests: a load run completed no request at all.
var ErrNoRequests = errors.New("bench: no request completed")

// RequestFunc builds the request a worker sends next (seq counts that
// worker's requests).
type RequestFunc func(worker, seq int) (*http.Request, error)

// Load is what one load run measured.
type Load struct {
	Workers  int           `json:"workers"`
	Rate     float64       `json:"target_rate,omitempty"` // open loop only: requests/s asked for
	Elapsed  time.Duration `json:"elapsed_ns"`
	Requests int64         `json:"requests"` // completed with a 2xx answer
	// Completed also counts the uncounted warm-up's answers: all the work
	// done while the run's CPU was measured.
	Completed int64         `json:"completed"`
	Errors    int64         `json:"errors"`
	Late      int64         `json:"late,omitempty"` // open loop: sent over 1 ms after due
	PerSec    float64       `json:"per_sec"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	FirstErr  string        `json:"first_error,omitempty"`

	lat []time.Duration // every latency, sorted
}

// merge adds the run m to l (same target, workers and rate).
func (l Load) merge(m Load) Load {
	if l.Elapsed == 0 {
		return m
	}
	l.Elapsed += m.Elapsed
	l.Requests += m.Requests
	l.Errors += m.Errors
	l.Late += m.Late
	if l.FirstErr == "" {
		l.FirstErr = m.FirstErr
	}
	l.lat = append(l.lat, m.lat...)
	slices.Sort(l.lat)
	l.PerSec = float64(l.Requests) / l.Elapsed.Seconds()
	l.P50, l.P99 = percentile(l.lat, 0.50), percentile(l.lat, 0.99)
	return l
}

// newClient is a keep-alive client for workers concurrent requests to one host.
func newClient(workers int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        workers + 16,
		MaxIdleConnsPerHost: workers + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}, Timeout: 30 * time.Second}
}

// recorder collects latencies and counts from many workers.
type recorder struct {
	ok, errs atomic.Int64
	all      atomic.Int64 // 2xx answers, warm-up included
	late     atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration
	firstErr error
}

func (r *recorder) add(lat []time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, lat...)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.errs.Add(1)
	r.mu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.mu.Unlock()
}

func (r *recorder) result(workers int, elapsed time.Duration) Load {
	l := Load{Workers: workers, Elapsed: elapsed, Requests: r.ok.Load(), Completed: r.all.Load(), Errors: r.errs.Load(), Late: r.late.Load()}
	if elapsed > 0 {
		l.PerSec = float64(l.Requests) / elapsed.Seconds()
	}
	l.P50, l.P99 = percentile(r.lat, 0.50), percentile(r.lat, 0.99)
	l.lat = r.lat
	if r.firstErr != nil {
		l.FirstErr = r.firstErr.Error()
	}
	return l
}

// percentile sorts lat in place and returns its q-quantile (0 when empty).
func percentile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	if !slices.IsSorted(lat) {
		slices.Sort(lat)
	}
	i := int(q * float64(len(lat)))
	return lat[min(i, len(lat)-1)]
}

// send does one request and reads the whole answer; a non-2xx status is an error.
func send(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// ClosedLoop runs workers goroutines, each sending its next request as soon as
// the previous one is answered, over keep-alive connections for d (after a
// short warm-up that is not counted). It gives the peak rate the target
// sustains at that concurrency.
func ClosedLoop(ctx context.Context, workers int, d time.Duration, next RequestFunc) (Load, error) {
	c := newClient(workers)
	defer c.CloseIdleConnections()
	return closedLoop(ctx, workers, d, func(w int) (func(seq int) error, func()) {
		return func(seq int) error {
			req, err := next(w, seq)
			if err != nil {
				return &buildError{err}
			}
			return send(c, req)
		}, func() {}
	})
}

// RawRequestFunc appends the bytes of the request a worker sends next to buf.
type RawRequestFunc func(worker, seq int, buf []byte) []byte

// ClosedLoopRaw is ClosedLoop with the lean client (rawConn): one keep-alive
// connection to addr per worker, requests serialised by next.
func ClosedLoopRaw(ctx context.Context, addr string, workers int, d time.Duration, next RawRequestFunc) (Load, error) {
	return closedLoop(ctx, workers, d, func(w int) (func(seq int) error, func()) {
		rc := &rawConn{addr: addr}
		var buf []byte
		return func(seq int) error {
			buf = next(w, seq, buf[:0])
			return rc.do(buf)
		}, func() { rc.Close() }
	})
}

// buildError is a request that could not be made: the worker stops.
type buildError struct{ error }

// closedLoop runs the workers that mk makes (a function sending one request,
// and one closing the worker's connections) for a warm-up and then d.
func closedLoop(ctx context.Context, workers int, d time.Duration, mk func(w int) (do func(seq int) error, done func())) (Load, error) {
	if workers < 1 {
		return Load{}, errors.New("bench: workers must be at least 1")
	}
	warm := min(d/5, 500*time.Millisecond)
	var rec recorder
	var counting atomic.Bool
	var wg sync.WaitGroup
	stop := make(chan struct{})
	asGenerator(ctx, func(context.Context) {
		for w := range workers {
			wg.Add(1)
			do, done := mk(w)
			go func() {
				defer wg.Done()
				defer done()
				closedWorker(ctx, do, &rec, &counting, stop)
			}()
		}
	})
	sleep(ctx, warm)
	start := time.Now()
	counting.Store(true)
	sleep(ctx, d)
	counting.Store(false)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	l := rec.result(workers, elapsed)
	if l.Requests == 0 {
		return l, fmt.Errorf("%w (first error: %s)", ErrNoRequests, l.FirstErr)
	}
	return l, ctx.Err()
}

// closedWorker is one closed-loop worker: the next request as soon as the
// previous one is answered.
func closedWorker(ctx context.Context, do func(seq int) error, rec *recorder, counting *atomic.Bool, stop chan struct{}) {
	lat := make([]time.Duration, 0, 4096)
	defer func() { rec.add(lat) }()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		t0 := time.Now()
		err := do(seq)
		var be *buildError
		if errors.As(err, &be) {
			rec.fail(be.error)
			return
		}
		if err == nil {
			rec.all.Add(1)
		}
		if !counting.Load() {
			continue
		}
		if err != nil {
			rec.fail(err)
			continue
		}
		rec.ok.Add(1)
		lat = append(lat, time.Since(t0))
	}
}

// OpenLoop offers requests at a fixed rate for d, whatever the answers' pace,
// from a pool of workers goroutines. Latency is measured from when a worker
// sends the request to the end of the answer: the target's response time at
// that offered rate. (Measuring from when a request was due would also count
// the generator's own scheduling stalls, hundreds of milliseconds on a
// shared 2-core machine, the same for any target.) Late is how many requests
// were sent more than a millisecond after they were due.
func OpenLoop(ctx context.Context, rate float64, workers int, d time.Duration, next RequestFunc) (Load, error) {
	if rate <= 0 || workers < 1 {
		return Load{}, errors.New("bench: rate and workers must be positive")
	}
	c := newClient(workers)
	defer c.CloseIdleConnections()
	type job struct {
		due time.Time
		seq int
	}
	jobs := make(chan job, workers*4)
	var rec recorder
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			defer func() { rec.add(lat) }()
			for j := range jobs {
				req, err := next(w, j.seq)
				if err != nil {
					rec.fail(err)
					continue
				}
				t0 := time.Now()
				if t0.Sub(j.due) > time.Millisecond {
					rec.late.Add(1)
				}
				if err := send(c, req); err != nil {
					rec.fail(err)
					continue
				}
				rec.ok.Add(1)
				lat = append(lat, time.Since(t0))
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	end := start.Add(d)
	n := 0
	for {
		due := start.Add(time.Duration(n) * interval)
		if !due.Before(end) || ctx.Err() != nil {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		// Blocks when every worker is busy and the queue is full: the due
		// time keeps the wait in the measured latency.
		jobs <- job{due: due, seq: n}
		n++
	}
	close(jobs)
	wg.Wait()
	l := rec.result(workers, time.Since(start))
	l.Rate = rate
	if l.Requests == 0 {
		return l, fmt.Errorf("%w (first error: %s)", ErrNoRequests, l.FirstErr)
	}
	return l, ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
