// Package natsbus is the scale-out event bus on NATS JetStream: access events
// partitioned by source so each detector instance owns a consistent slice of
// state, plus streams for issuance, key changes, alerts and control changes.
// Authority replicas follow the issuance stream ([Bus.FollowIssuance]) to
// enforce each other's revocations, and know when they have caught up. A
// consumer restarting with state in memory replays what it had
// acknowledged ([Bus.Replay]) before it consumes again.
//
// Delivery is at least once: publishers set Nats-Msg-Id so JetStream drops
// duplicate publishes within its window, and consumers skip redeliveries of
// ids they have already handled (Handled). Publishing is asynchronous with a
// bounded number of unacknowledged messages: when the server falls behind,
// Publish blocks (back-pressure) instead of buffering without bound.
package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/event"
)

// Defaults.
const (
	DefaultPartitions = 8
	DefaultMaxPending = 4096
	DefaultPrefix     = "custos"
	DefaultDupWindow  = 2 * time.Minute
)

// Config configures the bus.
type Config struct {
	URL        string `yaml:"url"`
	Prefix     string `yaml:"prefix"`     // subject and stream name prefix
	Partitions int    `yaml:"partitions"` // access-event partitions
	Replicas   int    `yaml:"replicas"`   // stream replicas (3 on a cluster)
	// AccessStreams spreads the access partitions over this many streams
	// (partition p in stream p mod AccessStreams; default 1). A stream is
	// ordered through one leader, so its rate is bounded; several streams
	// put their leaders on different nodes. Changing it needs new streams.
	AccessStreams int `yaml:"access_streams"`
	MaxPending    int `yaml:"max_pending"`
	// MaxAge bounds how long events stay in the stream (default 24h).
	MaxAge time.Duration `yaml:"max_age"`
	// AckWait is how long a durable consumer waits for an acknowledgement
	// before redelivering (default 30s). A delivery lost with a node is
	// redelivered after this long.
	AckWait time.Duration `yaml:"ack_wait"`
}

// ErrPublishFailed reports asynchronous publishes the server never stored,
// even after retries.
var ErrPublishFailed = errors.New("natsbus: publish failed")

// publishAttempts bounds how often an asynchronous publish is retried: with
// asyncTimeout per attempt and the back-off of resend, about 40 s, more than
// a cluster needs to elect new leaders after losing a node.
const publishAttempts = 16

// asyncTimeout is how long an asynchronous publish waits for its
// acknowledgement before it is re-sent.
const asyncTimeout = 2 * time.Second

// Bus is a connection to the JetStream bus.
type Bus struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	streams []string // names of every stream the bus uses

	// OnError, if set, hears consumer errors (reconnects, missed heartbeats).
	// Set it before the first Publish or Consume.
	OnError func(error)

	retries  chan retryMsg
	retrying atomic.Int64 // failed async publishes waiting to be re-sent
	failed   atomic.Int64 // async publishes given up on since the last Flush
	resent   atomic.Int64 // async publishes re-sent, ever
	// reclaimed counts messages read back after a consumer's predecessor
	// left them unacknowledged.
	reclaimed atomic.Uint64
	done      chan struct{}

	pending sync.Map // durable consumer name → messages still to deliver (uint64)
}

// Pending reports, for each durable consumer this process runs, how many
// messages were still waiting behind the last one delivered: the consumer's
// lag, as JetStream's delivery metadata states it.
func (b *Bus) Pending() map[string]uint64 {
	out := map[string]uint64{}
	b.pending.Range(func(k, v any) bool {
		out[k.(string)] = v.(uint64)
		return true
	})
	return out
}

// Open connects and creates (or updates) the streams.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.AccessStreams <= 0 {
		cfg.AccessStreams = 1
	}
	if cfg.AccessStreams > cfg.Partitions {
		return nil, fmt.Errorf("natsbus: %d access streams for %d partitions", cfg.AccessStreams, cfg.Partitions)
	}
	nc, err := nats.Connect(cfg.URL, nats.Timeout(3*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("failed to connect to NATS at %s: %w", cfg.URL, err)
	}
	b := &Bus{cfg: cfg, nc: nc,
		retries: make(chan retryMsg, cfg.MaxPending), done: make(chan struct{})}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncErrHandler(b.publishFailed), jetstream.WithPublishAsyncTimeout(asyncTimeout))
	if err != nil {
		nc.Close()
		return nil, err
	}
	b.js = js
	type streamDef struct {
		name       string
		subj       []string
		perSubject int64
	}
	var defs []streamDef
	if cfg.AccessStreams == 1 {
		defs = append(defs, streamDef{"ACCESS", []string{cfg.Prefix + ".access.>"}, 0})
	} else {
		for i := 0; i < cfg.AccessStreams; i++ {
			d := streamDef{name: "ACCESS_" + strconv.Itoa(i)}
			for p := i; p < cfg.Partitions; p += cfg.AccessStreams {
				d.subj = append(d.subj, b.accessSubject(p))
			}
			defs = append(defs, d)
		}
	}
	defs = append(defs,
		streamDef{"ISSUANCE", []string{cfg.Prefix + ".issuance"}, 0},
		streamDef{"KEYS", []string{cfg.Prefix + ".keys.>"}, 16},
		streamDef{"ALERTS", []string{cfg.Prefix + ".alerts"}, 0},
		streamDef{"CONTROL", []string{cfg.Prefix + ".control.>"}, 0})
	for _, s := range defs {
		b.streams = append(b.streams, streamName(cfg.Prefix, s.name))
		err := retry(ctx, func(actx context.Context) error {
			sc := jetstream.StreamConfig{
				Name: streamName(cfg.Prefix, s.name), Subjects: s.subj,
				Storage: jetstream.FileStorage, Replicas: cfg.Replicas, MaxAge: cfg.MaxAge,
				Duplicates: DefaultDupWindow,
			}
			if s.perSubject > 0 {
				sc.MaxMsgsPerSubject = s.perSubject
			}
			_, err := js.CreateOrUpdateStream(actx, sc)
			return err
		})
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("failed to create stream %s: %w", s.name, err)
		}
	}
	go b.resend()
	return b, nil
}

// publishFailed hears an asynchronous publish the server did not acknowledge
// (a node lost, a leader change) and queues it to be re-sent with the same
// Nats-Msg-Id, which the server de-duplicates if the first attempt was stored.
func (b *Bus) publishFailed(_ jetstream.JetStream, m *nats.Msg, err error) {
	n, _ := strconv.Atoi(m.Header.Get(attemptHeader))
	if n+1 >= publishAttempts || m.Header.Get(jetstream.MsgIDHeader) == "" {
		b.failed.Add(1)
		b.report(fmt.Errorf("failed to publish to %s after %d attempts: %w", m.Subject, n+1, err))
		return
	}
	m.Header.Set(attemptHeader, strconv.Itoa(n+1))
	b.retrying.Add(1)
	b.resent.Add(1)
	select {
	case b.retries <- retryMsg{m, time.Now().Add(time.Duration(min(n+1, 5)) * 100 * time.Millisecond)}:
	default:
		b.retrying.Add(-1)
		b.failed.Add(1)
		b.report(fmt.Errorf("failed to publish to %s: retry queue full: %w", m.Subject, err))
	}
}

const attemptHeader = "Custos-Attempt"

// retryMsg is a failed publish to re-send, not before at.
type retryMsg struct {
	m  *nats.Msg
	at time.Time
}

func (b *Bus) resend() {
	for {
		select {
		case <-b.done:
			return
		case r := <-b.retries:
			m := r.m
			if d := time.Until(r.at); d > 0 {
				select {
				case <-b.done:
					return
				case <-time.After(d):
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			go func() {
				select {
				case <-b.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := b.publishAsync(ctx, m); err != nil {
				b.failed.Add(1)
				b.report(err)
			}
			cancel()
			b.retrying.Add(-1)
		}
	}
}

// attemptTimeout bounds one JetStream API request. A request sent while a
// cluster has no meta leader (starting up, or just after losing a node) may
// get no answer at all, so each attempt needs its own deadline.
const attemptTimeout = 3 * time.Second

// retry runs op with a bounded deadline per attempt until it succeeds, fails
// permanently (the server rejected the request as invalid), or ctx ends.
func retry(ctx context.Context, op func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func streamName(prefix, s string) string {
	out := make([]byte, 0, len(prefix)+len(s)+1)
	for _, c := range []byte(prefix) {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c == '.' || c == '-' || c == '*' || c == '>' || c == ' ' {
			c = '_'
		}
		out = append(out, c)
	}
	return string(append(append(out, '_'), s...))
}

// Close drains the connection.
func (b *Bus) Close() error {
	if b.nc == nil {
		return nil
	}
	select {
	case <-b.done:
	default:
		close(b.done)
	}
	return b.nc.Drain()
}

// Partition is the partition of an access event: by its source network (the
// /24 of IPv4 or /48 of IPv6), so one detector sees all of a source's traffic.
func (b *Bus) Partition(ev *event.Access) int {
	return PartitionOf(ev.SrcIP, b.cfg.Partitions)
}

// PartitionOf maps a source address to one of n partitions.
func PartitionOf(src string, n int) int {
	h := fnv.New32a()
	if a, err := netip.ParseAddr(src); err == nil {
		bits := 24
		if a.Is6() && !a.Is4In6() {
			bits = 48
		}
		p, _ := a.Unmap().Prefix(bits)
		b, _ := p.Addr().MarshalBinary()
		h.Write(b)
	} else {
		h.Write([]byte(src))
	}
	return int(h.Sum32() % uint32(n))
}

// accessStream is the name of the stream holding partition p.
func (b *Bus) accessStream(p int) string {
	if b.cfg.AccessStreams <= 1 {
		return streamName(b.cfg.Prefix, "ACCESS")
	}
	return streamName(b.cfg.Prefix, "ACCESS_"+strconv.Itoa(p%b.cfg.AccessStreams))
}

func (b *Bus) accessSubject(p int) string {
	return b.cfg.Prefix + ".access." + strconv.Itoa(p)
}

// Publish sends ev asynchronously; it blocks when MaxPending messages await
// acknowledgement. Flush waits for all of them.
func (b *Bus) Publish(ctx context.Context, ev event.Access) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: b.accessSubject(b.Partition(&ev)), Data: data, Header: nats.Header{}}
	if ev.RequestID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, ev.RequestID)
	}
	return b.publishAsync(ctx, msg)
}

// publishAsync sends msg, waiting while too many publishes are unacknowledged
// and retrying while the connection is broken (the client reconnects to
// another node), until ctx ends.
func (b *Bus) publishAsync(ctx context.Context, msg *nats.Msg) error {
	backoff := 10 * time.Millisecond
	for {
		_, err := b.js.PublishMsgAsync(msg)
		if err == nil {
			return nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("failed to publish to %s: %w", msg.Subject, err)
		}
		wait := b.js.PublishAsyncComplete()
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			wait = nil // a broken connection: back off
			backoff = min(2*backoff, time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to publish to %s: %w (last error: %v)", msg.Subject, ctx.Err(), err)
		case <-wait:
		case <-time.After(backoff):
		}
	}
}

// Flush waits until every published message was acknowledged by the server
// (re-sending those a failed node lost), or ctx ends. It returns
// ErrPublishFailed if any asynchronous publish was given up on since the last Flush.
func (b *Bus) Flush(ctx context.Context) error {
	for {
		select {
		case <-b.js.PublishAsyncComplete():
		case <-ctx.Done():
			return fmt.Errorf("failed to flush: %d publishes unacknowledged: %w", b.js.PublishAsyncPending()+int(b.retrying.Load()), ctx.Err())
		}
		if b.retrying.Load() == 0 && b.js.PublishAsyncPending() == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := b.failed.Swap(0); n > 0 {
		return fmt.Errorf("%w: %d events not stored", ErrPublishFailed, n)
	}
	return nil
}

// PublishSync publishes ev and waits for the server's acknowledgement (used
// where the caller must know the event is stored, e.g. by tests and ingest).
// It retries, with the same Nats-Msg-Id, until stored or ctx ends.
func (b *Bus) PublishSync(ctx context.Context, ev event.Access) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return b.publishSync(ctx, b.accessSubject(b.Partition(&ev)), ev.RequestID, data)
}

func (b *Bus) publishSync(ctx context.Context, subject, id string, data []byte) error {
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	err := retry(ctx, func(actx context.Context) error {
		_, err := b.js.Publish(actx, subject, data, opts...)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to publish to %s: %w", subject, err)
	}
	return nil
}

// Handled remembers the ids a consumer has processed, bounded, so a redelivered
// message is acknowledged without being handled twice.
type Handled struct {
	mu    sync.Mutex
	seen  map[string]struct{}
	order []string
	next  int
}

// NewHandled remembers at most n ids.
func NewHandled(n int) *Handled {
	return &Handled{seen: make(map[string]struct{}, n), order: make([]string, n)}
}

// First reports whether id is new, and remembers it.
func (h *Handled) First(id string) bool {
	if id == "" {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.seen[id]; ok {
		return false
	}
	if old := h.order[h.next]; old != "" {
		delete(h.seen, old)
	}
	h.order[h.next] = id
	h.next = (h.next + 1) % len(h.order)
	h.seen[id] = struct{}{}
	return true
}

// Consume runs a durable consumer named group-p<N> for each partition in
// partitions, calling fn for each event in order per partition. A message is
// acknowledged after fn returns nil; if fn fails it is redelivered. Duplicate
// deliveries (same request id) are acknowledged without calling fn again.
// A consumer that loses its server (missed heartbeats, a node gone) is
// re-created, resuming from its durable position. Each partition's consumer
// belongs to one process (a detector instance owns its partitions): at
// start it first handles what a process before it was delivered and never
// acknowledged, rather than wait for the server to redeliver it after
// AckWait. Consume returns when ctx ends.
func (b *Bus) Consume(ctx context.Context, group string, partitions []int, fn func(event.Access) error) error {
	handled := NewHandled(1 << 16)
	var wg sync.WaitGroup
	errs := make(chan error, len(partitions))
	for _, p := range partitions {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			if err := b.consumePartition(ctx, group, p, handled, fn); err != nil {
				errs <- err
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (b *Bus) consumePartition(ctx context.Context, group string, p int, handled *Handled, fn func(event.Access) error) error {
	return b.durable(ctx, b.accessStream(p), fmt.Sprintf("%s-p%d", group, p), b.accessSubject(p), true, func(m jetstream.Msg) {
		var ev event.Access
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			m.Term() // a malformed message never becomes good; don't redeliver it forever
			return
		}
		handle(m, ev.RequestID, handled, func() error { return fn(ev) })
	})
}

// handle calls fn unless id was already handled, and acknowledges m: a
// redelivery of a handled id is acknowledged without calling fn again, a
// failure is negatively acknowledged so the server redelivers.
func handle(m jetstream.Msg, id string, handled *Handled, fn func() error) {
	if !handled.First(id) {
		m.Ack()
		return
	}
	if err := fn(); err != nil {
		handled.forget(id)
		m.Nak()
		return
	}
	// A plain (unconfirmed) ack: if it is lost the server redelivers after
	// AckWait and handled drops the repeat, so waiting for the server's
	// confirmation per message (DoubleAck) would only cost throughput.
	m.Ack()
}

// durable runs the durable consumer name on stream (filtered to subject) until
// ctx ends, re-creating it when its server or its leader is lost; it resumes
// from the consumer's acknowledged position, so nothing acknowledged is
// skipped and unacknowledged deliveries come again after AckWait.
//
// A consumer that one process owns alone (owned: an access partition of a
// detector instance) first takes back what its predecessor left
// unacknowledged ([Bus.reclaim]); one that several processes share does
// not, as those deliveries may be in a live member's hands.
func (b *Bus) durable(ctx context.Context, stream, name, subject string, owned bool, handler func(jetstream.Msg)) error {
	cfg := jetstream.ConsumerConfig{
		Durable: name, FilterSubject: subject,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: b.cfg.AckWait, MaxAckPending: 4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	for ctx.Err() == nil {
		var c jetstream.Consumer
		err := retry(ctx, func(actx context.Context) error {
			var err error
			c, err = b.js.CreateOrUpdateConsumer(actx, stream, cfg)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("failed to create consumer %s: %w", name, err)
		}
		if owned {
			if err := b.reclaim(ctx, c, stream, subject, handler); err != nil {
				b.report(fmt.Errorf("consumer %s: %w", name, err))
			}
		}
		lost := make(chan struct{}, 1)
		metered := func(m jetstream.Msg) {
			if md, err := m.Metadata(); err == nil {
				b.pending.Store(name, md.NumPending)
			}
			handler(m)
		}
		cc, err := c.Consume(metered, jetstream.PullMaxMessages(1024), jetstream.PullHeartbeat(2*time.Second),
			jetstream.ConsumeErrHandler(func(cc jetstream.ConsumeContext, err error) {
				b.report(fmt.Errorf("consumer %s: %w", name, err))
				if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					select {
					case lost <- struct{}{}:
					default:
					}
				}
			}))
		if err != nil {
			b.report(fmt.Errorf("failed to consume %s: %w", name, err))
			select {
			case <-ctx.Done():
			case <-time.After(attemptTimeout / 3):
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-lost:
		}
		cc.Stop()
	}
	return nil
}

// reclaim handles the messages a durable consumer delivered to a process
// that is gone (killed, or a consume loop this one stopped) before they were
// acknowledged. The server would redeliver them only once AckWait (30 s by
// default) has passed; a detector restarted within seconds would meanwhile
// go on with newer events and raise the stranded events' alerts late. Each
// durable consumer has one owner, and messages are handled in order and
// acknowledged after their handler, so the stranded ones are those after
// the acknowledgement floor up to the last delivery: they are read from
// the stream and handed to handler before new deliveries (their
// acknowledgements go nowhere; the redeliveries that come after AckWait are
// acknowledged as already handled).
func (b *Bus) reclaim(ctx context.Context, c jetstream.Consumer, stream, subject string, handler func(jetstream.Msg)) error {
	ictx, cancel := context.WithTimeout(ctx, attemptTimeout)
	info, err := c.Info(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("failed to read the consumer's state: %w", err)
	}
	if info.NumAckPending == 0 || info.Delivered.Stream <= info.AckFloor.Stream {
		return nil
	}
	last := info.Delivered.Stream
	oc, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.AckFloor.Stream + 1})
	if err != nil {
		return fmt.Errorf("failed to read unacknowledged deliveries: %w", err)
	}
	for ctx.Err() == nil {
		m, err := oc.Next(jetstream.FetchMaxWait(attemptTimeout))
		if err != nil {
			return fmt.Errorf("failed to read unacknowledged deliveries: %w", err)
		}
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream > last {
			return err
		}
		b.reclaimed.Add(1)
		handler(reclaimedMsg{m})
		if md.Sequence.Stream == last || md.NumPending == 0 {
			return nil
		}
	}
	return nil
}

// reclaimedMsg is a message read back by [Bus.reclaim]: it was not delivered
// to this consumer, so it is not acknowledged (the server's own
// redelivery is).
type reclaimedMsg struct{ jetstream.Msg }

func (reclaimedMsg) Ack() error                       { return nil }
func (reclaimedMsg) Nak() error                       { return nil }
func (reclaimedMsg) Term() error                      { return nil }
func (reclaimedMsg) NakWithDelay(time.Duration) error { return nil }

// Reclaimed counts the messages consumers read back after a predecessor
// left them unacknowledged (see [Bus.reclaim]).
func (b *Bus) Reclaimed() uint64 { return b.reclaimed.Load() }

func (b *Bus) report(err error) {
	if b.OnError != nil {
		b.OnError(err)
	}
}

func (h *Handled) forget(id string) {
	h.mu.Lock()
	delete(h.seen, id)
	h.mu.Unlock()
}

// Partitions returns the partitions instance i of n owns.
func (b *Bus) Partitions(i, n int) []int {
	var out []int
	for p := 0; p < b.cfg.Partitions; p++ {
		if p%n == i {
			out = append(out, p)
		}
	}
	return out
}
