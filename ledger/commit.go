package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

var (
	// ErrNotFound: the ledger holds no record of the hash (never issued, or
	// expired and forgotten).
	ErrNotFound = errors.New("ledger: not found")
	// ErrUnavailable: the ledger could not be reached, so provenance cannot be
	// checked; a gateway refuses with reason ledger_unavailable.
	ErrUnavailable = errors.New("ledger: unavailable")
	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("ledger: closed")
	// ErrNoSearchTarget: a search by jti or subject named neither. It is
	// refused rather than read as "every token".
	ErrNoSearchTarget = errors.New("ledger: a search needs a jti or a subject")
)

// PartialPutError is a PutBatch that stored some of its entries and not
// others (a sharded backend one of whose shards failed): an entry for which
// Failed is true is not stored, any other is, durably as PutBatch promises.
// The ledger hands out the stored entries' tokens and fails the others'.
type PartialPutError struct {
	Err    error
	Failed func(Hash) bool
}

func (e *PartialPutError) Error() string { return e.Err.Error() }
func (e *PartialPutError) Unwrap() error { return e.Err }

// Backend is the durable store behind the index (ledger/sqlite embedded,
// ledger/redis for scale-out). PutBatch must be atomic: all entries durable, or
// an error and none, or a *PartialPutError naming the entries not stored (a
// sharded backend, ledger/redis.Sharded, atomic per shard); it may set each
// entry's Ref. LoadLive may yield a hash
// more than once (an issuance and a later revocation record); a revoked
// record wins.
type Backend interface {
	PutBatch(ctx context.Context, entries []Entry) error
	Revoke(ctx context.Context, h Hash, exp time.Time) error
	Get(ctx context.Context, h Hash) (Entry, error) // ErrNotFound when absent
	LoadLive(ctx context.Context, now time.Time, fn func(Entry) error) error
	DeleteExpired(ctx context.Context, now time.Time) (int, error)
}

// RefBackend is a backend that reads a record by the Ref it gave it, which
// the index keeps beside the hash. Such a backend needs no index of its own
// on the hash (ledger/sqlite: rows are appended in issuance order, and a
// random-keyed B-tree was most of the cost of a put).
type RefBackend interface {
	Backend
	GetRef(ctx context.Context, ref uint64, h Hash) (Entry, error) // ErrNotFound when absent
}

// SharedBackend is implemented by backends that other authority replicas also
// write to (Redis): a miss in the local index is then checked against the
// backend instead of being final.
type SharedBackend interface {
	Backend
	SharedWithPeers() bool
}

// ExpiryGrace is how long after a token's exp the ledger still answers for it.
// Gateways accept exp with up to 30 s of clock leeway; without the grace a token
// inside that window would be reported as never issued instead of expired. The
// exp check itself stays the gateway's.
const ExpiryGrace = time.Minute

// Record is one change of the ledger as it reaches subscribers: a durable put
// (Revoked false) or a revocation.
type Record struct {
	Hash    Hash
	Exp     time.Time
	Revoked bool
	// Peer marks a record another authority replica committed, heard over
	// the cross-replica feed (Apply); it is not announced again.
	Peer bool
}

// Ledger is the issuance ledger: durable backend plus in-memory index, with
// group commit for puts and a feed of changes for gateways.
type Ledger struct {
	b      Backend
	shared bool
	ix     *Index
	now    func() time.Time

	queue    chan *putReq
	maxBatch int

	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}

	subMu  sync.RWMutex
	subs   map[int]func(Record)
	nextID int

	// The cross-replica feed (SetPeerFeed); nil without one.
	peersFresh func() bool
	announce   func(context.Context, Record) error
}

type putReq struct {
	ctx context.Context
	e   Entry
	err chan error // buffered 1
}

const (
	queueSize = 8192
	maxBatch  = 1024
)

// New loads the live entries of b into a fresh index and starts the commit
// loop. now is the clock used for expiry.
func New(ctx context.Context, b Backend, now func() time.Time) (*Ledger, error) {
	l := &Ledger{
		b:        b,
		ix:       NewIndex(0),
		now:      now,
		queue:    make(chan *putReq, queueSize),
		maxBatch: maxBatch,
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		subs:     map[int]func(Record){},
	}
	if sb, ok := b.(SharedBackend); ok {
		l.shared = sb.SharedWithPeers()
	}
	err := b.LoadLive(ctx, now().Add(-ExpiryGrace), func(e Entry) error {
		if e.Revoked {
			l.ix.Revoke(e.Hash, e.ExpiresAt)
		} else {
			l.ix.AddRef(e.Hash, e.ExpiresAt, e.Ref)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load live ledger entries: %w", err)
	}
	go l.commitLoop()
	return l, nil
}

// Index is the ledger's in-memory index, for read-only use by in-process
// gateways.
func (l *Ledger) Index() *Index { return l.ix }

// Put records e and returns only once it is durable. Concurrent puts share one
// backend transaction (group commit). If the commit fails every put in it gets
// the error and none enters the index. If ctx ends first Put returns its error;
// the entry may or may not have been committed, and the caller must not hand
// out the token.
func (l *Ledger) Put(ctx context.Context, e Entry) error {
	r := &putReq{ctx: ctx, e: e, err: make(chan error, 1)}
	select {
	case <-l.closing:
		return ErrClosed
	default:
	}
	select {
	case l.queue <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.closing:
		return ErrClosed
	}
	select {
	case err := <-r.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		// The loop stopped; it may have answered just before.
		select {
		case err := <-r.err:
			return err
		default:
			return ErrClosed
		}
	}
}

func (l *Ledger) commitLoop() {
	defer close(l.done)
	batch := make([]*putReq, 0, l.maxBatch)
	entries := make([]Entry, 0, l.maxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	prev := 0 // callers the last commit answered
	for {
		var first *putReq
		select {
		case first = <-l.queue:
		case <-l.closing:
			// Fail what is still queued; nobody will commit it.
			for {
				select {
				case r := <-l.queue:
					r.err <- ErrClosed
				default:
					return
				}
			}
		}
		batch = l.fill(append(batch[:0], first))
		if len(batch) < prev {
			batch = l.linger(batch, prev, linger)
		}
		prev = len(batch)
		entries = entries[:0]
		live := batch[:0:0]
		for _, r := range batch {
			// A put whose caller gave up is not written: its token is never handed out.
			if err := r.ctx.Err(); err != nil {
				r.err <- err
				continue
			}
			entries = append(entries, r.e)
			live = append(live, r)
		}
		if len(entries) == 0 {
			continue
		}
		err := l.b.PutBatch(context.Background(), entries)
		var partial *PartialPutError
		if errors.As(err, &partial) {
			// Some entries stored (their shards answered): their tokens go
			// out, the others' callers get the error.
			ferr := fmt.Errorf("failed to commit ledger batch: %w", err)
			n := 0
			for i, r := range live {
				if partial.Failed(entries[i].Hash) {
					r.err <- ferr
					continue
				}
				entries[n], live[n] = entries[i], r
				n++
			}
			entries, live, err = entries[:n], live[:n], nil
			if n == 0 {
				continue
			}
		}
		if err != nil {
			err = fmt.Errorf("failed to commit ledger batch: %w", err)
			for _, r := range live {
				r.err <- err
			}
			continue
		}
		for _, e := range entries {
			l.ix.AddRef(e.Hash, e.ExpiresAt, e.Ref)
		}
		l.publish(entries)
		for _, r := range live {
			r.err <- nil
		}
	}
}

// fill adds what is queued now, up to maxBatch.
func (l *Ledger) fill(batch []*putReq) []*putReq {
	for len(batch) < l.maxBatch {
		select {
		case r := <-l.queue:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// Lingering: callers answered by the last commit are usually on their way
// back with their next put. When fewer are queued than that commit answered,
// the loop waits for them while they keep arriving (at most lingerIdle
// between two arrivals, lingerMax in all), so that a steady load forms full
// batches instead of alternating large and small ones; each commit costs an
// fsync, whatever its size. It only delays a commit, never skips one.
const (
	lingerIdle = 100 * time.Microsecond
	lingerMax  = time.Millisecond
)

func (l *Ledger) linger(batch []*putReq, want int, t *time.Timer) []*putReq {
	deadline := time.Now().Add(lingerMax)
	for len(batch) < want && len(batch) < l.maxBatch {
		wait := min(lingerIdle, time.Until(deadline))
		if wait <= 0 {
			return batch
		}
		t.Reset(wait)
		select {
		case r := <-l.queue:
			t.Stop()
			batch = l.fill(append(batch, r))
		case <-t.C:
			return batch
		case <-l.closing:
			t.Stop()
			return batch
		}
	}
	return batch
}

func (l *Ledger) publish(entries []Entry) {
	// Exclusive, so subscribers see puts and revocations one at a time.
	l.subMu.Lock()
	defer l.subMu.Unlock()
	if len(l.subs) == 0 {
		return
	}
	for _, e := range entries {
		rec := Record{Hash: e.Hash, Exp: e.ExpiresAt, Revoked: e.Revoked}
		for _, fn := range l.subs {
			fn(rec)
		}
	}
}

// SetPeerFeed connects the ledger to the feed that carries every replica's
// records to every other (scale-out, on a shared backend). fresh reports
// whether this replica has applied everything the feed held a moment ago;
// while it is false, a live hash in the index is confirmed with the shared
// backend before it is answered, so a revocation made at a replica this one
// has not heard from is still honoured. announce, when not nil, puts a
// revocation on the feed; Revoke fails if it cannot, so a caller never
// believes a revocation the other replicas may not enforce. Call it once,
// before serving.
func (l *Ledger) SetPeerFeed(fresh func() bool, announce func(context.Context, Record) error) {
	l.peersFresh, l.announce = fresh, announce
}

// Fresh reports whether the index alone can be trusted with a live answer:
// always for a backend of its own, and for a shared one while the peer feed
// is caught up (or when there is no feed to wait for).
func (l *Ledger) Fresh() bool {
	return !l.shared || l.peersFresh == nil || l.peersFresh()
}

// Apply takes a record another replica committed, heard over the peer feed:
// it enters the index and goes to subscribers (marked Peer) if it changes
// what the index knows, so gateways following this replica hear every
// replica's issuance and revocations. Records of expired tokens, repeats and
// this replica's own records change nothing.
func (l *Ledger) Apply(r Record) {
	cut := l.now().Add(-ExpiryGrace)
	if !cut.Before(r.Exp) {
		return
	}
	st := l.ix.Status(r.Hash, cut)
	switch {
	case r.Revoked && st != Revoked:
		l.ix.Revoke(r.Hash, r.Exp)
	case !r.Revoked && st == Unknown:
		l.ix.Add(r.Hash, r.Exp)
	default:
		return
	}
	r.Peer = true
	l.subMu.Lock()
	defer l.subMu.Unlock()
	for _, fn := range l.subs {
		fn(r)
	}
}

// Subscribe calls fn with every record after it is durable, in commit order,
// until the returned cancel is called. fn runs on the commit path: it must not
// block (hand the record to a buffered channel and drop the consumer if it
// falls behind).
func (l *Ledger) Subscribe(fn func(Record)) (cancel func()) {
	l.subMu.Lock()
	id := l.nextID
	l.nextID++
	l.subs[id] = fn
	l.subMu.Unlock()
	return func() {
		l.subMu.Lock()
		delete(l.subs, id)
		l.subMu.Unlock()
	}
}

// Status answers from the index. With a backend shared by several authority
// replicas a miss is checked against the backend; an unreachable backend then
// gives ErrUnavailable.
func (l *Ledger) Status(ctx context.Context, h Hash) (Status, error) {
	st, _, err := l.lookup(ctx, h)
	return st, err
}

// LocalStatus is Status when the index can answer alone: always for a
// backend of its own, and for a shared one when the index knows h.
func (l *Ledger) LocalStatus(h Hash) (Status, bool) {
	st, _ := l.ix.Lookup(h, l.now().Add(-ExpiryGrace))
	switch {
	case !l.shared, st == Revoked:
		return st, true
	case st == Live:
		return st, l.Fresh()
	}
	return st, false
}

func (l *Ledger) lookup(ctx context.Context, h Hash) (Status, time.Time, error) {
	now := l.now().Add(-ExpiryGrace)
	st, exp := l.ix.Lookup(h, now)
	if !l.shared || st == Revoked || (st == Live && l.Fresh()) {
		return st, exp, nil
	}
	e, err := l.b.Get(ctx, h)
	if errors.Is(err, ErrNotFound) {
		return Unknown, time.Time{}, nil
	}
	if err != nil {
		return Unknown, time.Time{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if !now.Before(e.ExpiresAt) {
		return Unknown, time.Time{}, nil
	}
	if e.Revoked {
		l.ix.Revoke(e.Hash, e.ExpiresAt)
		return Revoked, e.ExpiresAt, nil
	}
	l.ix.Add(e.Hash, e.ExpiresAt)
	return Live, e.ExpiresAt, nil
}

// Get returns the full record of h, or ErrNotFound.
func (l *Ledger) Get(ctx context.Context, h Hash) (Entry, error) {
	if rb, ok := l.b.(RefBackend); ok && !l.shared {
		// The index holds every live entry of an unshared backend: what it
		// does not know has expired or was never issued.
		st, _, ref := l.ix.LookupRef(h, l.now().Add(-ExpiryGrace))
		if st == Unknown {
			return Entry{}, ErrNotFound
		}
		if ref != 0 {
			e, err := rb.GetRef(ctx, ref, h)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					return Entry{}, err
				}
				return Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
			}
			e.Revoked = e.Revoked || st == Revoked
			return e, nil
		}
	}
	e, err := l.b.Get(ctx, h)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
	}
	return e, nil
}

// Revoke marks the token h revoked, durably, then in the index and to
// subscribers. It returns ErrNotFound for a hash the ledger does not hold or
// that has already expired (such a token is refused anyway).
func (l *Ledger) Revoke(ctx context.Context, h Hash) error {
	e, err := l.Get(ctx, h)
	if err != nil {
		return err
	}
	if !l.now().Add(-ExpiryGrace).Before(e.ExpiresAt) {
		return ErrNotFound
	}
	if err := l.b.Revoke(ctx, h, e.ExpiresAt); err != nil {
		return fmt.Errorf("failed to revoke token: %w", err)
	}
	l.ix.Revoke(h, e.ExpiresAt)
	e.Revoked = true
	l.publish([]Entry{e})
	if l.announce != nil {
		// Durable here already: a replica that misses this message confirms
		// live hashes with the backend until it has caught up, so the error
		// only tells the caller to retry (a repeated revocation is harmless).
		if err := l.announce(ctx, Record{Hash: h, Exp: e.ExpiresAt, Revoked: true}); err != nil {
			return fmt.Errorf("%w: revocation stored but not announced to the other replicas: %v", ErrUnavailable, err)
		}
	}
	return nil
}

// Sweep forgets entries expired for longer than ExpiryGrace in the index and
// the backend, returning how many the backend deleted. Call it periodically
// (every minute is plenty).
func (l *Ledger) Sweep(ctx context.Context) (int, error) {
	now := l.now().Add(-ExpiryGrace)
	l.ix.Sweep(now)
	n, err := l.b.DeleteExpired(ctx, now)
	if err != nil {
		return n, fmt.Errorf("failed to delete expired ledger entries: %w", err)
	}
	return n, nil
}

// Close stops the commit loop; queued puts fail with ErrClosed. It does not
// close the backend.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() { close(l.closing) })
	<-l.done
	return nil
}
