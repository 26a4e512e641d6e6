package server

import "sync"

// fanout turns a register-once callback (the key manager's OnChange, new
// containment holds) into subscriptions that end, so each gateway stream
// can unsubscribe when it disconnects.
type fanout[T any] struct {
	mu   sync.RWMutex
	next int
	subs map[int]func(T)
}

func (f *fanout[T]) publish(v T) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, fn := range f.subs {
		fn(v)
	}
}

func (f *fanout[T]) subscribe(fn func(T)) (unsubscribe func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[int]func(T){}
	}
	id := f.next
	f.next++
	f.subs[id] = fn
	return func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}
