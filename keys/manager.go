package keys

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/store"
)

// Actor recorded for changes the schedule makes on its own.
const ActorSchedule = "custos/schedule"

// Journal kinds, one Append per committed operation; v is a []Change.
const (
	JournalRotate = "keys.rotate" // a new active key, the previous one demoted
	JournalRevoke = "keys.revoke" // a key withdrawn
	JournalRetire = "keys.retire" // verify-only keys past their verify window
	JournalExpire = "keys.expire" // an active key past MaxKeyAge demoted without a successor
)

// rotateBackoff stops a failing scheduled rotation from being retried on
// every signing request.
const rotateBackoff = 10 * time.Second

// More sentinel errors.
var (
	ErrInvalid         = errors.New("keys: actor and reason are required")
	ErrCustodyMismatch = errors.New("keys: custody holds a different key than recorded")
	ErrJournal         = errors.New("keys: audit journal refused the change")
	errNoActive        = errors.New("keys: no active key")
)

// Journal is the audit log. A state change takes effect only after Append
// returned nil: if the journal cannot record it, it does not happen.
type Journal interface {
	Append(ctx context.Context, kind string, v any) error
}

// Change is one recorded state transition of one key.
type Change struct {
	Seq    int64     `json:"seq"`
	KID    string    `json:"kid"`
	From   State     `json:"from"` // "" when the key was created
	To     State     `json:"to"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Manager runs the lifecycle of the keys in one custody: it keeps their
// metadata in the control-plane DB, rotates on schedule, and hands out the
// active signer. It is safe for concurrent use; Lookup, JWKS and the fast
// path of Signer take no lock.
type Manager struct {
	db      *store.DB
	c       Custody
	backend string
	p       Policy
	now     func() time.Time
	j       Journal

	mu              sync.Mutex // serialises changes
	rotateFailedAt  time.Time
	snap            atomic.Pointer[snapshot]
	subsMu          sync.Mutex
	subs            []func(Key)
	pendingDestroys map[string]bool // retired/revoked keys whose private half is still in custody
}

type record struct {
	key    Key
	der    []byte
	signer crypto.Signer // nil when custody does not hold the key
}

// snapshot is an immutable view of all keys; a change builds a new one.
type snapshot struct {
	keys   map[string]*record
	active *record
	jwks   []byte
}

var migrations = []string{`
CREATE TABLE IF NOT EXISTS keys_keys (
	kid TEXT PRIMARY KEY,
	alg TEXT NOT NULL,
	state TEXT NOT NULL,
	backend TEXT NOT NULL,
	public_der TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	demoted_at BIGINT,
	retired_at BIGINT,
	revoked_at BIGINT,
	revoke_reason TEXT NOT NULL DEFAULT '',
	destroyed_at BIGINT
);
CREATE TABLE IF NOT EXISTS keys_changes (
	seq BIGINT PRIMARY KEY,
	kid TEXT NOT NULL,
	from_state TEXT NOT NULL,
	to_state TEXT NOT NULL,
	actor TEXT NOT NULL,
	reason TEXT NOT NULL,
	at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_changes_kid ON keys_changes (kid, seq)`}

// NewManager migrates the keys tables in db and loads the recorded keys.
// backend names c in the records ("sealed", "pkcs11"). Zero fields of p take
// their defaults; an invalid policy is refused. j may be nil (no journal).
// NewManager does not create a key: the first Signer or Tick does.
func NewManager(ctx context.Context, db *store.DB, c Custody, backend string, p Policy, now func() time.Time, j Journal) (*Manager, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if err := db.Migrate(ctx, "keys", migrations); err != nil {
		return nil, err
	}
	m := &Manager{db: db, c: c, backend: backend, p: p, now: now, j: j, pendingDestroys: map[string]bool{}}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Policy returns the policy in force, defaults applied.
func (m *Manager) Policy() Policy { return m.p }

func (m *Manager) load(ctx context.Context) error {
	rows, err := m.db.QueryContext(ctx, `SELECT kid, alg, state, backend, public_der, created_at, demoted_at, retired_at, revoked_at, revoke_reason, destroyed_at FROM keys_keys`)
	if err != nil {
		return fmt.Errorf("failed to load keys: %w", err)
	}
	defer rows.Close()
	recs := map[string]*record{}
	for rows.Next() {
		var (
			k                                     Key
			der64                                 string
			created                               int64
			demoted, retired, revoked, destroyedT sql.NullInt64
		)
		if err := rows.Scan(&k.KID, &k.Alg, &k.State, &k.Backend, &der64, &created, &demoted, &retired, &revoked, &k.RevokeReason, &destroyedT); err != nil {
			return fmt.Errorf("failed to load keys: %w", err)
		}
		der, err := base64.StdEncoding.DecodeString(der64)
		if err != nil {
			return fmt.Errorf("failed to load key %s: bad public key encoding: %w", k.KID, err)
		}
		k.Public, err = x509.ParsePKIXPublicKey(der)
		if err != nil {
			return fmt.Errorf("failed to load key %s: %w", k.KID, err)
		}
		k.CreatedAt = fromMicros(created)
		k.DemotedAt, k.RetiredAt, k.RevokedAt = optTime(demoted), optTime(retired), optTime(revoked)
		recs[k.KID] = &record{key: k, der: der}
		if (k.State == Retired || k.State == Revoked) && !destroyedT.Valid && k.Backend == m.backend {
			m.pendingDestroys[k.KID] = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("failed to load keys: %w", err)
	}
	var active *record
	for _, r := range recs {
		if r.key.State == Active && (active == nil || r.key.CreatedAt.After(active.key.CreatedAt)) {
			active = r
		}
	}
	if active != nil && active.key.Backend == m.backend {
		s, err := m.c.Signer(active.key.KID)
		switch {
		case errors.Is(err, ErrNotFound):
			// Custody lost it: the next Signer call rotates past it.
		case err != nil:
			return fmt.Errorf("failed to open active key %s: %w", active.key.KID, err)
		case !publicEqual(s.Public(), active.key.Public):
			return fmt.Errorf("%w: active key %s", ErrCustodyMismatch, active.key.KID)
		default:
			active.signer = s
		}
	}
	m.snap.Store(newSnapshot(recs, active))
	return nil
}

func newSnapshot(recs map[string]*record, active *record) *snapshot {
	s := &snapshot{keys: recs, active: active}
	var set jose.JSONWebKeySet
	set.Keys = []jose.JSONWebKey{}
	for _, r := range sortedRecords(recs) {
		if r.key.State == Active || r.key.State == VerifyOnly {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: r.key.Public, KeyID: r.key.KID, Algorithm: string(r.key.Alg), Use: "sig"})
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		// Only unsupported key types fail to encode; they were parsed from
		// DER we wrote, so this is a programming error surfaced by JWKS.
		b = nil
	}
	s.jwks = b
	return s
}

// sortedRecords returns records newest first.
func sortedRecords(recs map[string]*record) []*record {
	out := make([]*record, 0, len(recs))
	for _, r := range recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *record) int {
		if c := b.key.CreatedAt.Compare(a.key.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.key.KID, b.key.KID)
	})
	return out
}

// Signer returns the active key and a signer for it. When there is no active
// key, or it is older than RotateEvery, it rotates first (actor
// ActorSchedule). If that rotation fails, the current key keeps signing until
// MaxKeyAge; past it, or when the key is not active, the error wraps
// ErrNotSigning. The signer re-checks state and age on every Sign, so a
// signer kept too long fails with ErrNotSigning rather than sign with a
// demoted, revoked or expired key; fetch one per token.
func (m *Manager) Signer(ctx context.Context) (Key, crypto.Signer, error) {
	now := m.now()
	if a := m.snap.Load().active; a != nil && a.signer != nil && now.Sub(a.key.CreatedAt) < m.p.RotateEvery {
		return cloneKey(a.key), m.guard(a), nil
	}
	m.mu.Lock()
	var changed []Key
	var rerr error
	a := m.snap.Load().active
	due := a == nil || a.signer == nil || now.Sub(a.key.CreatedAt) >= m.p.RotateEvery
	if due && (m.rotateFailedAt.IsZero() || now.Sub(m.rotateFailedAt) >= rotateBackoff) {
		changed, rerr = m.rotateLocked(ctx, ActorSchedule, "scheduled rotation", m.clock())
		if rerr != nil {
			m.rotateFailedAt = now
		} else {
			m.rotateFailedAt = time.Time{}
		}
	} else if due {
		rerr = fmt.Errorf("rotation failed %s ago, retrying after %s", now.Sub(m.rotateFailedAt), rotateBackoff)
	}
	a = m.snap.Load().active
	m.mu.Unlock()
	m.notify(changed)
	if a == nil || a.signer == nil || a.key.State != Active || now.Sub(a.key.CreatedAt) >= m.p.MaxKeyAge {
		if rerr == nil {
			rerr = errNoActive
		}
		return Key{}, nil, fmt.Errorf("%w: no usable signing key: %w", ErrNotSigning, rerr)
	}
	return cloneKey(a.key), m.guard(a), nil
}

func (m *Manager) guard(r *record) crypto.Signer {
	return &guardedSigner{m: m, kid: r.key.KID, created: r.key.CreatedAt, inner: r.signer}
}

// guardedSigner refuses to sign once its key is no longer active or is past
// MaxKeyAge, whatever the caller kept around.
type guardedSigner struct {
	m       *Manager
	kid     string
	created time.Time
	inner   crypto.Signer
}

func (g *guardedSigner) Public() crypto.PublicKey { return g.inner.Public() }

func (g *guardedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if g.m.now().Sub(g.created) >= g.m.p.MaxKeyAge {
		return nil, fmt.Errorf("%w: %s is past max key age %s", ErrNotSigning, g.kid, g.m.p.MaxKeyAge)
	}
	if a := g.m.snap.Load().active; a == nil || a.key.KID != g.kid {
		return nil, fmt.Errorf("%w: %s is no longer active", ErrNotSigning, g.kid)
	}
	return g.inner.Sign(r, digest, opts)
}

// Rotate makes a new active key; the previous active key becomes verify-only.
func (m *Manager) Rotate(ctx context.Context, actor, reason string) (Key, error) {
	if actor == "" || reason == "" {
		return Key{}, ErrInvalid
	}
	m.mu.Lock()
	changed, err := m.rotateLocked(ctx, actor, reason, m.clock())
	m.mu.Unlock()
	if err != nil {
		return Key{}, err
	}
	m.notify(changed)
	return changed[0], nil
}

// rotateLocked generates a key in custody and commits it as active, demoting
// the current active key. On any failure the new key is destroyed and
// nothing changes. The first Key returned is the new one.
func (m *Manager) rotateLocked(ctx context.Context, actor, reason string, at time.Time) ([]Key, error) {
	kid, err := newKID()
	if err != nil {
		return nil, err
	}
	pub, err := m.c.Generate(ctx, kid, m.p.Alg)
	if err != nil {
		return nil, fmt.Errorf("failed to generate key: %w", err)
	}
	fail := func(err error) ([]Key, error) {
		m.c.Destroy(context.WithoutCancel(ctx), kid)
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fail(fmt.Errorf("failed to encode public key: %w", err))
	}
	s, err := m.c.Signer(kid)
	if err != nil {
		return fail(fmt.Errorf("failed to open new key: %w", err))
	}
	nr := &record{der: der, signer: s, key: Key{KID: kid, Alg: m.p.Alg, State: Active, Backend: m.backend, CreatedAt: at, Public: pub}}
	ts := []transition{{rec: nr, insert: true}}
	if a := m.snap.Load().active; a != nil {
		d := *a
		d.signer = nil
		d.key.State = VerifyOnly
		d.key.DemotedAt = &at
		ts = append(ts, transition{rec: &d, from: Active})
	}
	changed, err := m.commitLocked(ctx, JournalRotate, actor, reason, at, ts)
	if err != nil {
		return fail(err)
	}
	return changed, nil
}

type transition struct {
	rec    *record // the key as it will be
	from   State   // its state before; "" for a new key
	insert bool
}

// commitLocked journals, then writes, then publishes a set of transitions. If
// the journal refuses, nothing is written.
func (m *Manager) commitLocked(ctx context.Context, kind, actor, reason string, at time.Time, ts []transition) ([]Key, error) {
	changes := make([]Change, len(ts))
	for i, t := range ts {
		changes[i] = Change{KID: t.rec.key.KID, From: t.from, To: t.rec.key.State, Actor: actor, Reason: reason, At: at}
	}
	if m.j != nil {
		if err := m.j.Append(ctx, kind, changes); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrJournal, kind, err)
		}
	}
	if err := m.write(ctx, ts, changes); err != nil {
		return nil, err
	}
	old := m.snap.Load()
	recs := make(map[string]*record, len(old.keys)+1)
	for k, v := range old.keys {
		recs[k] = v
	}
	active := old.active
	out := make([]Key, len(ts))
	for i, t := range ts {
		recs[t.rec.key.KID] = t.rec
		switch {
		case t.rec.key.State == Active:
			active = t.rec
		case active != nil && active.key.KID == t.rec.key.KID:
			active = nil
		}
		if t.rec.key.State == Retired || t.rec.key.State == Revoked {
			m.pendingDestroys[t.rec.key.KID] = t.rec.key.Backend == m.backend
		}
		out[i] = cloneKey(t.rec.key)
	}
	m.snap.Store(newSnapshot(recs, active))
	return out, nil
}

func (m *Manager) write(ctx context.Context, ts []transition, changes []Change) error {
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to record key change: %w", err)
	}
	defer tx.Rollback()
	for _, t := range ts {
		k := t.rec.key
		if t.insert {
			_, err = tx.ExecContext(ctx, `INSERT INTO keys_keys (kid, alg, state, backend, public_der, created_at, demoted_at, retired_at, revoked_at, revoke_reason) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`,
				k.KID, string(k.Alg), string(k.State), k.Backend, base64.StdEncoding.EncodeToString(t.rec.der), micros(k.CreatedAt), optMicros(k.DemotedAt), optMicros(k.RetiredAt), optMicros(k.RevokedAt), k.RevokeReason)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE keys_keys SET state=$1, demoted_at=$2, retired_at=$3, revoked_at=$4, revoke_reason=$5 WHERE kid=$6`,
				string(k.State), optMicros(k.DemotedAt), optMicros(k.RetiredAt), optMicros(k.RevokedAt), k.RevokeReason, k.KID)
		}
		if err != nil {
			return fmt.Errorf("failed to record key %s: %w", k.KID, err)
		}
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq),0) FROM keys_changes`).Scan(&seq); err != nil {
		return fmt.Errorf("failed to record key change: %w", err)
	}
	for i := range changes {
		seq++
		c := &changes[i]
		c.Seq = seq
		if _, err := tx.ExecContext(ctx, `INSERT INTO keys_changes (seq, kid, from_state, to_state, actor, reason, at) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
			seq, c.KID, string(c.From), string(c.To), c.Actor, c.Reason, micros(c.At)); err != nil {
			return fmt.Errorf("failed to record key change: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to record key change: %w", err)
	}
	return nil
}

// Revoke withdraws kid, from any state; it leaves JWKS at once. Revoking the
// active key makes a new one; if that fails the revocation still stands and
// the error says so. Revoking a revoked key is a no-op.
func (m *Manager) Revoke(ctx context.Context, kid, actor, reason string) error {
	if actor == "" || reason == "" {
		return ErrInvalid
	}
	m.mu.Lock()
	changed, err := m.revokeLocked(ctx, kid, actor, reason)
	m.mu.Unlock()
	m.notify(changed)
	return err
}

func (m *Manager) revokeLocked(ctx context.Context, kid, actor, reason string) ([]Key, error) {
	s := m.snap.Load()
	r, ok := s.keys[kid]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, kid)
	}
	if r.key.State == Revoked {
		return nil, nil
	}
	at := m.clock()
	nr := *r
	nr.signer = nil
	nr.key.State = Revoked
	nr.key.RevokedAt = &at
	nr.key.RevokeReason = reason
	wasActive := s.active != nil && s.active.key.KID == kid
	changed, err := m.commitLocked(ctx, JournalRevoke, actor, reason, at, []transition{{rec: &nr, from: r.key.State}})
	if err != nil {
		return nil, err
	}
	m.destroyPendingLocked(ctx)
	if wasActive {
		more, err := m.rotateLocked(ctx, actor, "replaces revoked key "+kid, at)
		if err != nil {
			return changed, fmt.Errorf("key %s revoked, but failed to make a new active key: %w", kid, err)
		}
		changed = append(changed, more...)
	}
	return changed, nil
}

// Tick applies the schedule: rotates when due (or when the active key reached
// MaxKeyAge), retires verify-only keys whose verify window (MaxTokenTTL +
// RetireLeeway since demotion) is over, and destroys the private half of
// retired and revoked keys. It returns every failure, joined.
func (m *Manager) Tick(ctx context.Context) error {
	m.mu.Lock()
	var changed []Key
	var errs []error
	now := m.clock()
	if a := m.snap.Load().active; a == nil || a.signer == nil || now.Sub(a.key.CreatedAt) >= m.p.RotateEvery {
		c, err := m.rotateLocked(ctx, ActorSchedule, "scheduled rotation", now)
		if err != nil {
			errs = append(errs, fmt.Errorf("failed scheduled rotation: %w", err))
			if a != nil && now.Sub(a.key.CreatedAt) >= m.p.MaxKeyAge {
				// No successor, but the record must show the key no longer signs.
				d := *a
				d.signer = nil
				d.key.State = VerifyOnly
				d.key.DemotedAt = &now
				c, err = m.commitLocked(ctx, JournalExpire, ActorSchedule, "max key age reached", now, []transition{{rec: &d, from: Active}})
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
		changed = append(changed, c...)
	}
	var retire []transition
	for _, r := range sortedRecords(m.snap.Load().keys) {
		if r.key.State != VerifyOnly {
			continue
		}
		since := r.key.CreatedAt
		if r.key.DemotedAt != nil {
			since = *r.key.DemotedAt
		}
		if now.Sub(since) >= m.p.MaxTokenTTL+m.p.RetireLeeway {
			nr := *r
			nr.key.State = Retired
			nr.key.RetiredAt = &now
			retire = append(retire, transition{rec: &nr, from: VerifyOnly})
		}
	}
	if len(retire) > 0 {
		c, err := m.commitLocked(ctx, JournalRetire, ActorSchedule, "verify window over", now, retire)
		if err != nil {
			errs = append(errs, err)
		}
		changed = append(changed, c...)
	}
	if err := m.destroyPendingLocked(ctx); err != nil {
		errs = append(errs, err)
	}
	m.mu.Unlock()
	m.notify(changed)
	return errors.Join(errs...)
}

// destroyPendingLocked removes the private half of retired and revoked keys
// from custody, and records that it did.
func (m *Manager) destroyPendingLocked(ctx context.Context) error {
	var errs []error
	for kid, here := range m.pendingDestroys {
		if !here {
			delete(m.pendingDestroys, kid) // held by another backend
			continue
		}
		if err := m.c.Destroy(ctx, kid); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("failed to destroy key %s in custody: %w", kid, err))
			continue
		}
		if _, err := m.db.ExecContext(ctx, `UPDATE keys_keys SET destroyed_at=$1 WHERE kid=$2`, micros(m.now()), kid); err != nil {
			errs = append(errs, fmt.Errorf("failed to record destruction of key %s: %w", kid, err))
			continue
		}
		delete(m.pendingDestroys, kid)
	}
	return errors.Join(errs...)
}

// Lookup returns kid's record from memory, public key included. It takes no
// lock: the gateway calls it per request.
func (m *Manager) Lookup(kid string) (Key, bool) {
	r, ok := m.snap.Load().keys[kid]
	if !ok {
		return Key{}, false
	}
	return cloneKey(r.key), true
}

// List returns every key, newest first.
func (m *Manager) List(ctx context.Context) ([]Key, error) {
	recs := sortedRecords(m.snap.Load().keys)
	out := make([]Key, len(recs))
	for i, r := range recs {
		out[i] = cloneKey(r.key)
	}
	return out, nil
}

// History returns kid's recorded changes, oldest first.
func (m *Manager) History(ctx context.Context, kid string) ([]Change, error) {
	if _, ok := m.Lookup(kid); !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, kid)
	}
	rows, err := m.db.QueryContext(ctx, `SELECT seq, kid, from_state, to_state, actor, reason, at FROM keys_changes WHERE kid=$1 ORDER BY seq`, kid)
	if err != nil {
		return nil, fmt.Errorf("failed to read history of %s: %w", kid, err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var at int64
		if err := rows.Scan(&c.Seq, &c.KID, &c.From, &c.To, &c.Actor, &c.Reason, &at); err != nil {
			return nil, fmt.Errorf("failed to read history of %s: %w", kid, err)
		}
		c.At = fromMicros(at)
		out = append(out, c)
	}
	return out, rows.Err()
}

// JWKS returns the RFC 7517 key set of the keys that verify today (active and
// verify-only), newest first. Revoked and retired keys are absent.
func (m *Manager) JWKS() ([]byte, error) {
	b := m.snap.Load().jwks
	if b == nil {
		return nil, errors.New("keys: failed to encode JWKS")
	}
	return b, nil
}

// OnChange registers fn to run after each committed change, once per key
// changed, in the goroutine that made the change and outside any lock.
func (m *Manager) OnChange(fn func(Key)) {
	m.subsMu.Lock()
	m.subs = append(m.subs, fn)
	m.subsMu.Unlock()
}

func (m *Manager) notify(changed []Key) {
	if len(changed) == 0 {
		return
	}
	m.subsMu.Lock()
	subs := slices.Clone(m.subs)
	m.subsMu.Unlock()
	for _, k := range changed {
		for _, fn := range subs {
			fn(cloneKey(k))
		}
	}
}

func newKID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("failed to draw key id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func cloneKey(k Key) Key {
	k.DemotedAt = cloneTime(k.DemotedAt)
	k.RetiredAt = cloneTime(k.RetiredAt)
	k.RevokedAt = cloneTime(k.RevokedAt)
	return k
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

func publicEqual(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

// clock is the time recorded for changes, at the database's precision.
func (m *Manager) clock() time.Time { return m.now().UTC().Truncate(time.Microsecond) }

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func optMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func optTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}
