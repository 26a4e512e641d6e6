package natsbus

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
)

// ErrMalformed is a stream message that does not decode.
var ErrMalformed = errors.New("natsbus: malformed message")

// issuance is the wire form of a ledger.Record on the issuance stream.
type issuance struct {
	Hash    string `json:"hash"` // hex SHA-256 of the token
	Exp     int64  `json:"exp"`  // unix seconds
	Revoked bool   `json:"revoked,omitempty"`
}

// EncodeIssuance is the issuance stream's message for r.
func EncodeIssuance(r ledger.Record) ([]byte, error) {
	return json.Marshal(issuance{Hash: r.Hash.String(), Exp: r.Exp.Unix(), Revoked: r.Revoked})
}

// DecodeIssuance parses an issuance stream message.
func DecodeIssuance(data []byte) (ledger.Record, error) {
	var w issuance
	if err := json.Unmarshal(data, &w); err != nil {
		return ledger.Record{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var r ledger.Record
	if n, err := hex.Decode(r.Hash[:], []byte(w.Hash)); err != nil || n != len(r.Hash) || len(w.Hash) != 2*len(r.Hash) {
		return ledger.Record{}, fmt.Errorf("%w: hash %q", ErrMalformed, w.Hash)
	}
	if w.Exp <= 0 {
		return ledger.Record{}, fmt.Errorf("%w: exp %d", ErrMalformed, w.Exp)
	}
	r.Exp, r.Revoked = time.Unix(w.Exp, 0).UTC(), w.Revoked
	return r, nil
}

// PublishIssuance stores an issuance or revocation record on the issuance
// stream and waits for the acknowledgement. Re-publishing the same record is
// de-duplicated by the server.
func (b *Bus) PublishIssuance(ctx context.Context, r ledger.Record) error {
	data, err := EncodeIssuance(r)
	if err != nil {
		return err
	}
	id := "i-" + r.Hash.String()
	if r.Revoked {
		id = "r-" + r.Hash.String()
	}
	return b.publishSync(ctx, b.cfg.Prefix+".issuance", id, data)
}

// ConsumeIssuance calls fn for every record on the issuance stream, oldest
// first, then for each new one, until ctx ends or fn fails. Each caller gets
// its own ordered (ephemeral) consumer, so every gateway sees every record;
// a lost server or leader is recovered from the last record seen.
func (b *Bus) ConsumeIssuance(ctx context.Context, fn func(ledger.Record) error) error {
	return b.ordered(ctx, "ISSUANCE", "", jetstream.DeliverAllPolicy, func(data []byte) error {
		r, err := DecodeIssuance(data)
		if err != nil {
			b.report(err)
			return nil // skip: a malformed record never becomes good
		}
		return fn(r)
	})
}

// keyChange is the wire form of a key's state on the key stream.
type keyChange struct {
	KID   string     `json:"kid"`
	Alg   keys.Alg   `json:"alg,omitempty"`
	State keys.State `json:"state"`
}

func (b *Bus) keySubject(kid string) string {
	return b.cfg.Prefix + ".keys." + base64.RawURLEncoding.EncodeToString([]byte(kid))
}

// PublishKey stores a key's current state (kid, alg, state; never key
// material) on the key stream, one subject per key.
func (b *Bus) PublishKey(ctx context.Context, k keys.Key) error {
	if k.KID == "" || k.State == "" {
		return fmt.Errorf("%w: key change needs kid and state", ErrMalformed)
	}
	data, err := json.Marshal(keyChange{KID: k.KID, Alg: k.Alg, State: k.State})
	if err != nil {
		return err
	}
	return b.publishSync(ctx, b.keySubject(k.KID), "k-"+k.KID+"-"+string(k.State), data)
}

// ConsumeKeys calls fn with the latest state of every key, then with each
// change, until ctx ends or fn fails. The keys.Key passed carries KID, Alg and
// State only. Every caller sees every change.
func (b *Bus) ConsumeKeys(ctx context.Context, fn func(keys.Key) error) error {
	return b.ordered(ctx, "KEYS", b.cfg.Prefix+".keys.>", jetstream.DeliverLastPerSubjectPolicy, func(data []byte) error {
		var w keyChange
		if err := json.Unmarshal(data, &w); err != nil || w.KID == "" || w.State == "" {
			b.report(fmt.Errorf("%w: key change %q", ErrMalformed, data))
			return nil
		}
		return fn(keys.Key{KID: w.KID, Alg: w.Alg, State: w.State})
	})
}

// PublishAlert stores an alert (any JSON-encodable value) under id; an alert
// published twice with the same id (a detector redelivered an event) is
// stored once.
func (b *Bus) PublishAlert(ctx context.Context, id string, alert any) error {
	if id == "" {
		return fmt.Errorf("%w: alert needs an id", ErrMalformed)
	}
	data, err := json.Marshal(alert)
	if err != nil {
		return fmt.Errorf("failed to encode alert %s: %w", id, err)
	}
	return b.publishSync(ctx, b.cfg.Prefix+".alerts", id, data)
}

// ConsumeAlerts runs the durable consumer group on the alert stream: each
// alert is handled by one member of the group, at least once, and a
// redelivery of an alert already handled here is not passed to fn again.
func (b *Bus) ConsumeAlerts(ctx context.Context, group string, fn func(id string, alert json.RawMessage) error) error {
	handled := NewHandled(1 << 14)
	return b.durable(ctx, streamName(b.cfg.Prefix, "ALERTS"), group+"-alerts", b.cfg.Prefix+".alerts", false, func(m jetstream.Msg) {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if !json.Valid(m.Data()) {
			m.Term()
			return
		}
		handle(m, id, handled, func() error { return fn(id, json.RawMessage(m.Data())) })
	})
}

// FollowAlerts calls fn with every alert published from now on, until ctx
// ends or fn fails: every caller sees every alert (an authority relaying
// detectors' alerts to its live feeds), none is acknowledged.
func (b *Bus) FollowAlerts(ctx context.Context, fn func(alert json.RawMessage) error) error {
	return b.ordered(ctx, "ALERTS", "", jetstream.DeliverNewPolicy, func(data []byte) error {
		if !json.Valid(data) {
			b.report(fmt.Errorf("%w: alert %q", ErrMalformed, data))
			return nil
		}
		return fn(json.RawMessage(data))
	})
}

// ordered runs an ordered consumer on stream (filtered to filter, if set) until ctx ends or fn fails. The
// client library re-creates it from the last sequence seen when it misses
// heartbeats or its server goes away.
func (b *Bus) ordered(ctx context.Context, stream, filter string, policy jetstream.DeliverPolicy, fn func([]byte) error) error {
	return b.orderedMsgs(ctx, stream, filter, policy, func(m jetstream.Msg) error { return fn(m.Data()) })
}

// orderedMsgs is ordered with the whole message (its metadata too).
func (b *Bus) orderedMsgs(ctx context.Context, stream, filter string, policy jetstream.DeliverPolicy, fn func(jetstream.Msg) error) error {
	name := streamName(b.cfg.Prefix, stream)
	var c jetstream.Consumer
	err := retry(ctx, func(actx context.Context) error {
		var err error
		cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: policy}
		if filter != "" {
			cfg.FilterSubjects = []string{filter}
		}
		c, err = b.js.OrderedConsumer(actx, name, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to follow %s: %w", name, err)
	}
	failed := make(chan error, 1)
	cc, err := c.Consume(func(m jetstream.Msg) {
		if err := fn(m); err != nil {
			select {
			case failed <- err:
			default:
			}
		}
	}, jetstream.PullHeartbeat(2*time.Second), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		b.report(fmt.Errorf("following %s: %w", name, err))
	}))
	if err != nil {
		return fmt.Errorf("failed to follow %s: %w", name, err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// Sink adapts the bus to the gateway's fire-and-forget publisher
// (Publish(event.Access)): each event is published asynchronously, with
// back-pressure; an event that cannot be published before ctx ends is
// reported to OnError and counted in Dropped.
type Sink struct {
	b       *Bus
	ctx     context.Context
	dropped atomic.Uint64
}

// Sink returns a publisher for the access-event stream bound to ctx.
func (b *Bus) Sink(ctx context.Context) *Sink { return &Sink{b: b, ctx: ctx} }

// Publish sends e; it blocks while too many events await acknowledgement.
func (s *Sink) Publish(e event.Access) {
	if err := s.b.Publish(s.ctx, e); err != nil {
		s.dropped.Add(1)
		s.b.report(err)
	}
}

// Dropped is how many events the sink could not publish.
func (s *Sink) Dropped() uint64 { return s.dropped.Load() }
