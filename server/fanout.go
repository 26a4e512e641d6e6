package server

import (
	"sync"

	"github.com/custos-dev/custos/keys"
)

// fanout turns the key manager's register-once OnChange into subscriptions
// that end, so each gateway key stream can unsubscribe when it disconnects.
type fanout struct {
	mu   sync.RWMutex
	next int
	subs map[int]func(keys.Key)
}

func (f *fanout) publish(k keys.Key) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, fn := range f.subs {
		fn(k)
	}
}

func (f *fanout) subscribe(fn func(keys.Key)) (unsubscribe func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[int]func(keys.Key){}
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
