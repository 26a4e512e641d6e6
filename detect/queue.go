package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/custos-dev/custos/store"
)

// Work a detector process hands to the authorities. A detector holds no
// signing key, ledger or audit log: in a scale-out deployment the
// containment actions it raises and the alerts the audit log must record
// are written to PostgreSQL as pending rows (in the transaction that
// stores the alert, or before the raising event is acknowledged), and one
// authority claims each row, carries it out and marks it done.
//
// A claim is an UPDATE of pending rows picked with SELECT … FOR UPDATE
// SKIP LOCKED, so two authorities never claim the same row at once; it
// holds a lease, and a row whose claimant died (still claimed when its
// lease ends) is claimed again by another. Carrying out an action twice is
// harmless (a hold, a revocation or a suspension already made is kept as
// it is), and the audit appends of a claim are made before it is marked
// done: an authority killed between the two leaves its alerts to be
// appended again by the next claimant (see docs/SCALING.md).

// Queue states.
const (
	QueuePending = "pending"
	QueueClaimed = "claimed"
	QueueDone    = "done"
	QueueFailed  = "failed"
)

// Queues of the detect component (tables of its migrations).
const (
	ActionQueue = "detect_action_queue" // containment actions to carry out
	AuditQueue  = "detect_audit_queue"  // alerts to append to the audit log
)

// Claimed is one row of a work queue held by a claimant.
type Claimed struct {
	ID       string
	Body     []byte
	Attempts int // including this claim
}

// WorkQueue is one of the work tables on a PostgreSQL store.
type WorkQueue struct {
	db    *store.DB
	table string
}

// NewWorkQueue returns the queue table (ActionQueue or AuditQueue) of db,
// migrating detection's tables first.
func NewWorkQueue(ctx context.Context, db *store.DB, table string) (*WorkQueue, error) {
	if table != ActionQueue && table != AuditQueue {
		return nil, fmt.Errorf("unknown work queue %q", table)
	}
	if db.Dialect != "postgres" {
		return nil, fmt.Errorf("work queue %s needs PostgreSQL, not %s", table, db.Dialect)
	}
	if err := db.Migrate(ctx, "detect", migrations); err != nil {
		return nil, fmt.Errorf("failed to migrate detection tables: %w", err)
	}
	return &WorkQueue{db: db, table: table}, nil
}

// Claim takes up to n rows that are pending and due, or claimed under an
// expired lease, for owner until now+lease.
func (q *WorkQueue) Claim(ctx context.Context, owner string, lease time.Duration, n int) ([]Claimed, error) {
	now := time.Now()
	rows, err := q.db.QueryContext(ctx, `UPDATE `+q.table+` SET state = 'claimed', owner = $1, lease_until = $2, attempts = attempts + 1
		WHERE id IN (SELECT id FROM `+q.table+` WHERE state IN ('pending', 'claimed') AND lease_until <= $3
			ORDER BY created, id LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING id, body, attempts`, owner, now.Add(lease).UnixNano(), now.UnixNano(), n)
	if err != nil {
		return nil, fmt.Errorf("failed to claim from %s: %w", q.table, err)
	}
	defer rows.Close()
	var out []Claimed
	for rows.Next() {
		var c Claimed
		var body string
		if err := rows.Scan(&c.ID, &body, &c.Attempts); err != nil {
			return nil, fmt.Errorf("failed to claim from %s: %w", q.table, err)
		}
		c.Body = []byte(body)
		out = append(out, c)
	}
	return out, rows.Err()
}

// ErrLeaseLost is returned when a row is no longer held by the caller:
// its lease ended and another claimant took it.
var ErrLeaseLost = errors.New("work queue: claim taken over")

// Done marks id, claimed by owner, done.
func (q *WorkQueue) Done(ctx context.Context, id, owner string) error {
	return q.settle(ctx, id, owner, QueueDone, "", 0)
}

// Retry hands id back to the queue after a failure, due again at after.
func (q *WorkQueue) Retry(ctx context.Context, id, owner string, cause error, after time.Time) error {
	return q.settle(ctx, id, owner, QueuePending, cause.Error(), after.UnixNano())
}

// Fail marks id failed for good: nobody claims it again.
func (q *WorkQueue) Fail(ctx context.Context, id, owner string, cause error) error {
	return q.settle(ctx, id, owner, QueueFailed, cause.Error(), 0)
}

func (q *WorkQueue) settle(ctx context.Context, id, owner, state, msg string, due int64) error {
	res, err := q.db.ExecContext(ctx, `UPDATE `+q.table+` SET state = $1, error = $2, lease_until = $3, done_at = $4
		WHERE id = $5 AND owner = $6 AND state = 'claimed'`, state, msg, due, time.Now().UnixNano(), id, owner)
	if err != nil {
		return fmt.Errorf("failed to mark %s %s: %w", id, state, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%s %s: %w", q.table, id, ErrLeaseLost)
	}
	return nil
}

// State returns the state, owner and attempts of row id (for tests and
// operators); ok is false when there is none.
func (q *WorkQueue) State(ctx context.Context, id string) (state, owner string, attempts int, ok bool, err error) {
	err = q.db.QueryRowContext(ctx, `SELECT state, owner, attempts FROM `+q.table+` WHERE id = $1`, id).Scan(&state, &owner, &attempts)
	if err != nil {
		if errors.Is(err, errNoRows) {
			return "", "", 0, false, nil
		}
		return "", "", 0, false, err
	}
	return state, owner, attempts, true, nil
}

// enqueue writes body under id as pending in table, unless id is there.
func enqueue(ctx context.Context, x execer, table, id string, body []byte) error {
	_, err := x.ExecContext(ctx, `INSERT INTO `+table+` (id, body, state, created) VALUES ($1, $2, 'pending', $3)
		ON CONFLICT (id) DO NOTHING`, id, string(body), time.Now().UnixNano())
	return err
}

// QueuedContainment is the [Containment] of a detector process: every
// action is written to the action queue of the shared store, for an
// authority to carry out. Detection plans, rate-limits and records the
// action as it does anywhere else; an action is queued once under its id
// (act-<alert>-<action>), however often its alert is raised again.
type QueuedContainment struct{ DB *store.DB }

var (
	_ Containment         = QueuedContainment{}
	_ RecordedContainment = QueuedContainment{}
)

// Carry queues r.
func (c QueuedContainment) Carry(ctx context.Context, r ActionRecord) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := enqueue(ctx, c.DB, ActionQueue, r.ID, body); err != nil {
		return fmt.Errorf("failed to queue %s: %w", r.ID, err)
	}
	return nil
}

// The per-action methods are not called: Carry takes every action.
func (c QueuedContainment) RevokeKey(context.Context, string, string) error { return errWantsRecord }
func (c QueuedContainment) RevokeToken(context.Context, string, string) error {
	return errWantsRecord
}
func (c QueuedContainment) BlockSource(context.Context, netip.Prefix, time.Time, string) error {
	return errWantsRecord
}
func (c QueuedContainment) ForceRelogin(context.Context, string, string) error {
	return errWantsRecord
}

var errWantsRecord = errors.New("queued containment takes whole action records")

// ErrBadQueuedAction is returned for a queued action an authority does not
// carry out: malformed, a dry run, or not what its own evidence supports.
var ErrBadQueuedAction = errors.New("queued action refused")

// ParseQueuedAction decodes an action row of the queue and checks it as an
// authority must before carrying it out: a known action, not a dry run,
// and the very action and target its evidence plans (the rules of
// proportionality hold whoever wrote the row: a key is revoked only on a
// validly signed token never issued, and so on).
func ParseQueuedAction(body []byte) (ActionRecord, error) {
	var r ActionRecord
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadQueuedAction, err)
	}
	if !r.Action.valid() || r.ID == "" || r.DryRun {
		return r, fmt.Errorf("%w: %q (action %q, dry run %v)", ErrBadQueuedAction, r.ID, r.Action, r.DryRun)
	}
	a := &Alert{ID: r.AlertID, Rule: r.Evidence["rule"], Raised: r.Time, Attrs: r.Evidence}
	want, err := plan(a, ContainPolicy{For: r.Until.Sub(r.Time)}, r.Action, nil)
	if err != nil {
		return r, err
	}
	if want.ID != r.ID || want.Target != r.Target || want.Rule != r.Rule || !want.Until.Equal(r.Until) {
		return r, fmt.Errorf("%w: %s on %q is not what its evidence plans (%s on %q)", ErrBadQueuedAction, r.ID, r.Target, want.ID, want.Target)
	}
	return r, nil
}

// RecordOutcome writes the error an authority met carrying out queued
// action r into its record (detect_actions), whether or not the
// detector's flush has written the record yet (it does not overwrite).
func RecordOutcome(ctx context.Context, db *store.DB, r ActionRecord, cause error) error {
	if cause == nil || r.ID == "" {
		return nil
	}
	r.Error = cause.Error()
	body, _ := json.Marshal(r)
	_, err := db.ExecContext(ctx, `INSERT INTO detect_actions (id, time, action, target, rule, alert_id, dry_run, error, body) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
		ON CONFLICT (id) DO UPDATE SET error = excluded.error, body = excluded.body`,
		r.ID, r.Time.UnixNano(), string(r.Action), r.Target, r.Rule, r.AlertID, r.DryRun, r.Error, string(body))
	return err
}

// QueueAudit makes Flush queue every alert it writes for the audit log
// (once per alert id): set on a detector process, whose alerts an
// authority appends.
func (e *Engine) QueueAudit() {
	e.subMu.Lock()
	e.auditQueue = true
	e.subMu.Unlock()
}

// StateWindow is how far back the events that make up this engine's
// sliding state reach: the longest of its detectors' windows, its custom
// rules' windows and the dedup window. A detector that restarts replays
// the events of this span (see [Engine.Replaying]) to stand where it stood.
func (e *Engine) StateWindow() time.Duration {
	c := e.cfg
	w := max(c.DedupWindow, c.Enumeration.Window, c.IDCoverage.Window, c.UnknownSubject.Window, c.IPRotation.Window, c.ForeignSpread.Window)
	for _, r := range e.rules.Load().rules {
		w = max(w, r.Window)
	}
	return w
}

// Replaying runs fn, which feeds the engine events it already processed
// before a restart, so that its windows and open alerts stand where they
// stood: alerts fn raises are kept and written by Flush (under the ids
// they had, so the store keeps one row each), but subscribers, the live
// stream and containment hear nothing of them, since they heard of them
// the first time.
func (e *Engine) Replaying(fn func() error) error {
	e.replaying.Store(true)
	defer e.replaying.Store(false)
	return fn()
}
