package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/ledger"
)

// DefaultCatchUpCheck is how often a Follower compares what it has applied
// with what the stream holds.
const DefaultCatchUpCheck = 200 * time.Millisecond

// Follower applies every record of the issuance stream (every replica's
// issuance and revocations) and knows whether it has caught up: CaughtUp is
// true only while the connection is up and every record the stream held at
// the previous check (at most two check intervals ago) has been applied. A
// replica that reconnects after missing messages is therefore not caught up
// until it has applied them from the stream's durable store.
type Follower struct {
	b        *Bus
	applied  atomic.Uint64 // stream sequence of the last record applied
	caughtAt atomic.Int64  // unix nanoseconds of the last check that found it caught up
	every    time.Duration
}

// leaseChecks: a check that found the follower caught up vouches for it for
// this many intervals. A check that hangs (a request stuck behind a
// reconnect) lets the lease run out instead of leaving a stale yes.
const leaseChecks = 4

// FollowIssuance starts applying the issuance stream with fn (from its
// oldest record, then each new one) until ctx ends, and checking every
// interval (0: DefaultCatchUpCheck) whether it has caught up. fn must not
// fail for a record it cannot use; it is called from one goroutine.
func (b *Bus) FollowIssuance(ctx context.Context, interval time.Duration, fn func(ledger.Record)) *Follower {
	if interval <= 0 {
		interval = DefaultCatchUpCheck
	}
	f := &Follower{b: b, every: interval}
	go func() {
		for ctx.Err() == nil {
			err := b.orderedMsgs(ctx, "ISSUANCE", "", jetstream.DeliverAllPolicy, func(m jetstream.Msg) error {
				if r, err := DecodeIssuance(m.Data()); err != nil {
					b.report(err)
				} else {
					fn(r)
				}
				if md, err := m.Metadata(); err == nil {
					f.applied.Store(md.Sequence.Stream)
				}
				return nil
			})
			if err != nil && ctx.Err() == nil {
				f.caughtAt.Store(0)
				b.report(err)
				select {
				case <-ctx.Done():
				case <-time.After(interval):
				}
			}
		}
	}()
	go f.watch(ctx)
	return f
}

// CaughtUp reports whether the follower has applied everything the stream
// held a moment ago, over a live connection.
func (f *Follower) CaughtUp() bool {
	at := f.caughtAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < leaseChecks*f.every && f.b.nc.Status() == nats.CONNECTED
}

func (f *Follower) watch(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	name := streamName(f.b.cfg.Prefix, "ISSUANCE")
	var target uint64
	known := false
	for {
		select {
		case <-ctx.Done():
			f.caughtAt.Store(0)
			return
		case <-t.C:
		}
		// Caught up if every record that existed at the last check has
		// been applied; then remember what exists now for the next check.
		checked := time.Now()
		ok := known && f.applied.Load() >= target && f.b.nc.Status() == nats.CONNECTED
		actx, cancel := context.WithTimeout(ctx, f.every*leaseChecks)
		s, err := f.b.js.Stream(actx, name)
		cancel()
		if err != nil {
			f.caughtAt.Store(0)
			known = false
			continue
		}
		st := s.CachedInfo().State
		if ok {
			f.caughtAt.Store(checked.UnixNano())
		} else {
			f.caughtAt.Store(0)
		}
		if st.Msgs == 0 {
			target = 0 // everything expired: nothing to apply
		} else {
			target = st.LastSeq
		}
		known = true
	}
}

// Control changes: revocations and containment decided at one replica that
// every replica must enforce (a client or credential revoked, a source
// blocked). Each is one JSON document under a kind; the stream keeps them
// for MaxAge and a new follower replays them in order, so handlers must be
// idempotent (applying a change twice is applying it once).

// controlSubject is the subject of kind: dot-separated non-empty tokens of
// letters, digits, '-' and '_' (such as containment.hold), each a token of
// the subject.
func (b *Bus) controlSubject(kind string) (string, error) {
	if kind == "" || len(kind) > 64 {
		return "", fmt.Errorf("%w: control kind %q", ErrMalformed, kind)
	}
	for _, tok := range strings.Split(kind, ".") {
		if tok == "" {
			return "", fmt.Errorf("%w: control kind %q", ErrMalformed, kind)
		}
		for _, c := range tok {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%w: control kind %q", ErrMalformed, kind)
			}
		}
	}
	return b.cfg.Prefix + ".control." + kind, nil
}

// PublishControl stores a control change of kind under id (the same id
// published twice within the duplicate window is stored once) and waits for
// the acknowledgement.
func (b *Bus) PublishControl(ctx context.Context, kind, id string, data []byte) error {
	subj, err := b.controlSubject(kind)
	if err != nil {
		return err
	}
	if !json.Valid(data) {
		return fmt.Errorf("%w: control change is not JSON", ErrMalformed)
	}
	return b.publishSync(ctx, subj, id, data)
}

// FollowControl calls fn for every control change on the stream, oldest
// first, then for each new one, until ctx ends; every caller sees every
// change. Malformed messages are reported and skipped.
func (b *Bus) FollowControl(ctx context.Context, fn func(kind string, data []byte)) {
	prefix := b.cfg.Prefix + ".control."
	for ctx.Err() == nil {
		err := b.orderedMsgs(ctx, "CONTROL", "", jetstream.DeliverAllPolicy, func(m jetstream.Msg) error {
			kind, ok := strings.CutPrefix(m.Subject(), prefix)
			if !ok || !json.Valid(m.Data()) {
				b.report(fmt.Errorf("%w: control message on %s", ErrMalformed, m.Subject()))
				return nil
			}
			fn(kind, m.Data())
			return nil
		})
		if err != nil && ctx.Err() == nil {
			b.report(err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}
