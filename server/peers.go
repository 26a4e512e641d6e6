package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Control changes that every replica must enforce (a client or credential
// revoked, a source blocked by containment) travel as (kind, JSON document)
// pairs: over the bus's CONTROL stream in a scale-out deployment, directly to
// the local handlers otherwise. Handlers see every change, their own
// replica's included, and replays after a restart: they must be idempotent.
type controlFeed struct {
	mu       sync.RWMutex
	handlers map[string][]func(json.RawMessage)
}

// OnControl registers fn for control changes of kind, made at any replica.
// Register before Run.
func (s *Server) OnControl(kind string, fn func(json.RawMessage)) {
	s.control.mu.Lock()
	defer s.control.mu.Unlock()
	if s.control.handlers == nil {
		s.control.handlers = map[string][]func(json.RawMessage){}
	}
	s.control.handlers[kind] = append(s.control.handlers[kind], fn)
}

// Announce makes a control change known to every replica: stored on the
// bus (and applied here when it comes back) in a scale-out deployment,
// applied here at once otherwise. id names the change so that a retried
// announcement is stored once.
func (s *Server) Announce(ctx context.Context, kind, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("failed to encode control change %s: %w", kind, err)
	}
	if s.bus == nil {
		s.control.dispatch(kind, data)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	if err := s.bus.PublishControl(ctx, kind, id, data); err != nil {
		return fmt.Errorf("failed to announce %s to the other replicas: %w", kind, err)
	}
	return nil
}

func (c *controlFeed) dispatch(kind string, data []byte) {
	c.mu.RLock()
	hs := c.handlers[kind]
	c.mu.RUnlock()
	for _, h := range hs {
		h(json.RawMessage(data))
	}
}

// followControl applies the bus's control changes until ctx ends.
func (s *Server) followControl(ctx context.Context) {
	if s.bus != nil {
		go s.bus.FollowControl(ctx, s.control.dispatch)
	}
}
