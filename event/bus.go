package event

import (
	"sync"
	"sync/atomic"
)

// Bus fans access events out to in-process subscribers. It is the embedded
// default; the scale-out bus (NATS JetStream) satisfies the same Publisher
// interface at the places that publish.
//
// A slow subscriber never blocks the gateway: each subscription has a bounded
// buffer and events that do not fit are counted as dropped for that subscriber
// (Subscription.Dropped), which is exported as a metric.
type Bus struct {
	mu   sync.RWMutex
	subs []*Subscription
}

// Subscription receives events on C until Close.
type Subscription struct {
	C       chan Access
	bus     *Bus
	dropped atomic.Uint64
	block   bool
	once    sync.Once
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{} }

// Subscribe returns a subscription with a buffer of size n. When lossless is
// true, Publish waits for room instead of dropping (use it for consumers that
// must see every event, such as the forensics store and the audit digests).
func (b *Bus) Subscribe(n int, lossless bool) *Subscription {
	s := &Subscription{C: make(chan Access, n), bus: b, block: lossless}
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
		if s.block {
			s.C <- e
			continue
		}
		select {
		case s.C <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// Dropped reports how many events did not fit this subscription's buffer.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close removes the subscription and closes C.
func (s *Subscription) Close() {
	s.once.Do(func() {
		b := s.bus
		b.mu.Lock()
		for i, x := range b.subs {
			if x == s {
				b.subs = append(b.subs[:i], b.subs[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		close(s.C)
	})
}
