package event

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLinger is how long a subscription gathers events before it hands
// them to its consumer as one batch.
const DefaultLinger = time.Millisecond

// Bus fans access events out to in-process subscribers. It is the embedded
// default; the scale-out bus (NATS JetStream) satisfies the same Publisher
// interface at the places that publish.
//
// Events reach a subscriber in batches: the first event after a quiet moment
// arms a timer, and when it fires (Linger later) everything gathered since is
// handed over at once. A consumer is therefore woken once per batch rather
// than once per event, which on a busy gateway is most of what publishing
// used to cost (a futex wake-up per event per consumer).
//
// A slow subscriber never blocks the gateway unless it asked to: each
// subscription holds at most n pending events, and events beyond that are
// counted as dropped (Subscription.Dropped, exported as a metric), or, for a
// lossless subscription, make Publish wait for room.
type Bus struct {
	// Linger is the batching delay for subscriptions made after it is set;
	// zero means DefaultLinger.
	Linger time.Duration

	mu   sync.RWMutex
	subs []*Subscription
}

// Subscription receives batches of events on C until Close. A batch is only
// valid until the next receive from C: its memory is reused, so a consumer
// that keeps events copies them out (ranging by value does).
type Subscription struct {
	C <-chan []Access

	c        chan []Access
	bus      *Bus
	linger   time.Duration
	max      int
	lossless bool
	dropped  atomic.Uint64

	mu      sync.Mutex
	room    sync.Cond // signalled when pending is emptied or on Close
	pending []Access
	last    []Access // the batch the consumer holds now
	spare   []Access // the one it held before: free to reuse
	armed   bool
	closed  bool

	sendMu   sync.Mutex    // orders batches; held while one is handed over
	done     chan struct{} // closed when a waiting hand-over must give up
	doneOnce sync.Once
	once     sync.Once
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{} }

// Subscribe returns a subscription that holds at most n pending events. When
// lossless is true, Publish waits for room instead of dropping (use it for
// consumers that must see every event, such as the forensics store and the
// audit digests).
func (b *Bus) Subscribe(n int, lossless bool) *Subscription {
	if n < 1 {
		n = 1
	}
	l := b.Linger
	if l <= 0 {
		l = DefaultLinger
	}
	c := make(chan []Access)
	s := &Subscription{C: c, c: c, bus: b, linger: l, max: n, lossless: lossless, done: make(chan struct{})}
	s.room.L = &s.mu
	b.mu.Lock()
	b.subs = append(b.subs, s)
	b.mu.Unlock()
	return s
}

// Publish delivers e to every subscriber.
func (b *Bus) Publish(e Access) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, s := range b.subs {
		s.add(&e)
	}
}

func (s *Subscription) add(e *Access) {
	s.mu.Lock()
	for len(s.pending) >= s.max && s.lossless && !s.closed {
		s.room.Wait()
	}
	switch {
	case s.closed:
	case len(s.pending) >= s.max:
		s.dropped.Add(1)
	default:
		s.pending = append(s.pending, *e)
		if !s.armed {
			s.armed = true
			time.AfterFunc(s.linger, s.flush)
		}
	}
	s.mu.Unlock()
}

// flush hands everything pending to the consumer as one batch. Batches are
// handed over one at a time and in order; while one waits for the consumer,
// new events gather for the next.
func (s *Subscription) flush() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	batch := s.pending
	s.pending, s.spare = s.spare[:0], nil
	s.armed = false
	s.room.Broadcast()
	closed := s.closed
	s.mu.Unlock()
	if closed || len(batch) == 0 {
		return
	}
	select {
	case s.c <- batch:
	case <-s.done:
		return
	}
	// The consumer has taken this batch, so it is done with the one before:
	// that buffer becomes the spare that the next pending list reuses.
	s.mu.Lock()
	if s.spare == nil {
		s.spare = s.last
	}
	s.last = batch
	s.mu.Unlock()
}

// Dropped reports how many events did not fit this subscription's buffer.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close removes the subscription and closes C; events still pending are
// discarded.
func (s *Subscription) Close() { s.close(nil) }

// Drain removes the subscription, hands what is still pending to the
// consumer (waiting for it until ctx ends), then closes C. Use it on a
// graceful stop, after the publishers have finished.
func (s *Subscription) Drain(ctx context.Context) { s.close(ctx) }

func (s *Subscription) close(drain context.Context) {
	s.once.Do(func() {
		// Stop taking events first: this also releases a Publish waiting
		// for room, which holds the bus's read lock.
		s.mu.Lock()
		s.closed = true
		s.room.Broadcast()
		rest := s.pending
		s.pending = nil
		s.mu.Unlock()
		stopDone := func() {}
		if drain == nil {
			s.endDone()
		} else {
			t := context.AfterFunc(drain, s.endDone)
			stopDone = func() { t() }
		}
		defer stopDone()
		b := s.bus
		b.mu.Lock()
		for i, x := range b.subs {
			if x == s {
				b.subs = append(b.subs[:i], b.subs[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		s.sendMu.Lock() // after any batch being handed over
		if len(rest) > 0 && drain != nil {
			select {
			case s.c <- rest:
			case <-s.done:
			}
		}
		s.endDone()
		close(s.c)
		s.sendMu.Unlock()
	})
}

func (s *Subscription) endDone() { s.doneOnce.Do(func() { close(s.done) }) }
