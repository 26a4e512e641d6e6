package detect

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/store"
)

// migrations are detection's control-plane tables; append only.
var migrations = []string{
	`CREATE TABLE detect_alerts (
		id TEXT PRIMARY KEY, rule TEXT NOT NULL, severity TEXT NOT NULL, entity TEXT NOT NULL,
		incident_id TEXT NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,
		raised BIGINT NOT NULL, count BIGINT NOT NULL, body TEXT NOT NULL);
	CREATE INDEX detect_alerts_raised ON detect_alerts(raised);
	CREATE TABLE detect_incidents (
		id TEXT PRIMARY KEY, awareness BIGINT NOT NULL, last_seen BIGINT NOT NULL,
		severity TEXT NOT NULL, body TEXT NOT NULL);
	CREATE TABLE detect_actions (
		id TEXT PRIMARY KEY, time BIGINT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
		rule TEXT NOT NULL, alert_id TEXT NOT NULL, dry_run BOOLEAN NOT NULL, error TEXT NOT NULL,
		body TEXT NOT NULL)`,
	`CREATE INDEX detect_alerts_incident ON detect_alerts(incident_id);
	CREATE INDEX detect_incidents_awareness ON detect_incidents(awareness)`,
	// Work handed by detector processes to the authorities (queue.go).
	`CREATE TABLE detect_action_queue (
		id TEXT PRIMARY KEY, body TEXT NOT NULL, state TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
		lease_until BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
		created BIGINT NOT NULL, done_at BIGINT NOT NULL DEFAULT 0);
	CREATE INDEX detect_action_queue_due ON detect_action_queue(state, lease_until);
	CREATE TABLE detect_audit_queue (
		id TEXT PRIMARY KEY, body TEXT NOT NULL, state TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
		lease_until BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
		created BIGINT NOT NULL, done_at BIGINT NOT NULL DEFAULT 0);
	CREATE INDEX detect_audit_queue_due ON detect_audit_queue(state, lease_until)`,
}

// errNoRows is what a query for one row returns when there is none.
var errNoRows = sql.ErrNoRows

// execer is what enqueue writes with: the store or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// SetStore migrates detection's tables in db and makes Flush write to them.
func (e *Engine) SetStore(ctx context.Context, db *store.DB) error {
	if err := db.Migrate(ctx, "detect", migrations); err != nil {
		return fmt.Errorf("failed to migrate detection tables: %w", err)
	}
	e.subMu.Lock()
	e.db = db
	e.subMu.Unlock()
	// Until now nothing was tracked for writing: everything held is new to the store.
	e.mu.Lock()
	if !e.persist {
		e.persist = true
		for _, a := range e.alerts {
			e.dirtyA[a] = struct{}{}
		}
		for _, inc := range e.incidents {
			e.dirtyI[inc] = struct{}{}
		}
		e.dirtyX = append(e.dirtyX, e.actions...)
	}
	e.mu.Unlock()
	return nil
}

// Flush writes alerts, incidents and actions changed since the last flush.
// Writes are upserts, so a flush that fails is retried whole by the next.
func (e *Engine) Flush(ctx context.Context) error {
	e.subMu.RLock()
	db, audit := e.db, e.auditQueue
	e.subMu.RUnlock()
	if db == nil {
		return nil
	}
	e.mu.Lock()
	var as []Alert
	for a := range e.dirtyA {
		c := *a
		c.Samples = append([]string(nil), a.Samples...)
		as = append(as, c)
	}
	var is []Incident
	for i := range e.dirtyI {
		is = append(is, copyIncident(i))
	}
	xs := e.dirtyX
	clear(e.dirtyA)
	clear(e.dirtyI)
	e.flushGen++ // what the open-alert slots marked dirty is now written
	e.dirtyX = nil
	e.mu.Unlock()
	if len(as)+len(is)+len(xs) == 0 {
		return nil
	}
	err := e.write(ctx, db, as, is, xs, audit)
	if err != nil { // put them back for the next flush
		e.mu.Lock()
		for i := range as {
			if a := e.byID[as[i].ID]; a != nil {
				e.dirtyA[a] = struct{}{}
			}
		}
		for i := range is {
			if inc := e.incByID[is[i].ID]; inc != nil {
				e.dirtyI[inc] = struct{}{}
			}
		}
		e.dirtyX = append(xs, e.dirtyX...)
		e.mu.Unlock()
	}
	return err
}

func (e *Engine) write(ctx context.Context, db *store.DB, as []Alert, is []Incident, xs []ActionRecord, audit bool) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to flush alerts: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("failed to flush alerts: %w", err), tx.Rollback())
		}
	}()
	for _, a := range as {
		body, _ := json.Marshal(a)
		if _, err = tx.ExecContext(ctx, `INSERT INTO detect_alerts (id, rule, severity, entity, incident_id, first_seen, last_seen, raised, count, body)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
			ON CONFLICT (id) DO UPDATE SET first_seen=excluded.first_seen, last_seen=excluded.last_seen, count=excluded.count, body=excluded.body
			WHERE excluded.count >= detect_alerts.count`,
			a.ID, a.Rule, string(a.Severity), a.Entity, a.Incident, a.FirstSeen.UnixNano(), a.LastSeen.UnixNano(), a.Raised.UnixNano(), a.Count, string(body)); err != nil {
			return err
		}
		if audit {
			if err = enqueue(ctx, tx, AuditQueue, a.ID, body); err != nil {
				return err
			}
		}
	}
	for _, i := range is {
		body, _ := json.Marshal(i)
		if _, err = tx.ExecContext(ctx, `INSERT INTO detect_incidents (id, awareness, last_seen, severity, body) VALUES ($1,$2,$3,$4,$5)
			ON CONFLICT (id) DO UPDATE SET last_seen=excluded.last_seen, severity=excluded.severity, body=excluded.body
			WHERE excluded.last_seen >= detect_incidents.last_seen`,
			i.ID, i.Awareness.UnixNano(), i.LastSeen.UnixNano(), string(i.Severity), string(body)); err != nil {
			return err
		}
	}
	for _, x := range xs {
		body, _ := json.Marshal(x)
		if _, err = tx.ExecContext(ctx, `INSERT INTO detect_actions (id, time, action, target, rule, alert_id, dry_run, error, body) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
			ON CONFLICT (id) DO NOTHING`,
			x.ID, x.Time.UnixNano(), string(x.Action), x.Target, x.Rule, x.AlertID, x.DryRun, x.Error, string(body)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// ProcessDurable is [Engine.Process] for a consumer that acknowledges ev
// once it returns nil: an alert ev raised is in the store by then, so a
// consumer that dies loses no alert; it raises it again from the
// redelivered event, under the same id. (Updates of open alerts, counts and
// last seen, are written by the next flush.)
func (e *Engine) ProcessDurable(ctx context.Context, ev event.Access) error {
	before := e.raised.Load()
	e.Process(ev)
	if e.raised.Load() == before {
		return nil
	}
	return e.Flush(ctx)
}

// StoredAlerts reads alerts back from the store, newest first, at most limit.
func StoredAlerts(ctx context.Context, db *store.DB, limit int) ([]Alert, error) {
	return storedAlerts(ctx, db, AlertQuery{Limit: limit})
}

// AlertQuery selects alerts; empty fields match any.
type AlertQuery struct {
	Rule     string
	Severity Severity
	Limit    int // at most this many, newest first; 0: the engine's MaxAlerts
}

func (q AlertQuery) match(a *Alert) bool {
	return (q.Rule == "" || a.Rule == q.Rule) && (q.Severity == "" || a.Severity == q.Severity)
}

// ListAlerts returns the alerts q selects, newest first. With a store set,
// they are read from it, after this engine's own changes are written: the
// store holds what every process writing to it raised (replicas, detectors,
// earlier runs of this one), so the list survives restarts and is the same
// on every replica. Without one, they are the alerts in memory.
func (e *Engine) ListAlerts(ctx context.Context, q AlertQuery) ([]Alert, error) {
	if q.Limit <= 0 {
		q.Limit = e.cfg.MaxAlerts
	}
	if db := e.store(); db != nil {
		_ = e.Flush(ctx) // what is not written yet is listed once the next flush is
		return storedAlerts(ctx, db, q)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Alert
	for i := len(e.alerts) - 1; i >= 0 && len(out) < q.Limit; i-- {
		a := e.alerts[(e.alertNext+i)%len(e.alerts)]
		if q.match(a) {
			c := *a
			c.Samples = append([]string(nil), a.Samples...)
			out = append(out, c)
		}
	}
	return out, nil
}

// ListIncidents returns at most limit incidents (0: the engine's
// MaxIncidents), newest first, from the store when one is set (see
// [Engine.ListAlerts]).
func (e *Engine) ListIncidents(ctx context.Context, limit int) ([]Incident, error) {
	if limit <= 0 {
		limit = e.cfg.MaxIncidents
	}
	if db := e.store(); db != nil {
		_ = e.Flush(ctx)
		rows, err := db.QueryContext(ctx, `SELECT body FROM detect_incidents ORDER BY awareness DESC, id DESC LIMIT $1`, limit)
		if err != nil {
			return nil, fmt.Errorf("failed to read incidents: %w", err)
		}
		return scanBodies[Incident](rows, "incidents")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Incident
	for i := len(e.incidents) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, copyIncident(e.incidents[(e.incNext+i)%len(e.incidents)]))
	}
	return out, nil
}

// FindIncident returns the incident with id and its alerts, from the store
// when one is set (see [Engine.ListAlerts]). ok is false when there is none.
func (e *Engine) FindIncident(ctx context.Context, id string) (inc Incident, alerts []Alert, ok bool, err error) {
	db := e.store()
	if db == nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		p := e.incByID[id]
		if p == nil {
			return Incident{}, nil, false, nil
		}
		for _, aid := range p.Alerts {
			if a := e.byID[aid]; a != nil {
				c := *a
				c.Samples = append([]string(nil), a.Samples...)
				alerts = append(alerts, c)
			}
		}
		return copyIncident(p), alerts, true, nil
	}
	_ = e.Flush(ctx)
	rows, err := db.QueryContext(ctx, `SELECT body FROM detect_incidents WHERE id = $1`, id)
	if err != nil {
		return Incident{}, nil, false, fmt.Errorf("failed to read incident: %w", err)
	}
	incs, err := scanBodies[Incident](rows, "incidents")
	if err != nil || len(incs) == 0 {
		return Incident{}, nil, false, err
	}
	inc = incs[0]
	// Its alerts: those it lists and those naming it (another writer of the
	// same incident, such as a second detector, may have listed others).
	rows, err = db.QueryContext(ctx, `SELECT body, incident_id FROM detect_alerts WHERE incident_id = $1 ORDER BY raised, id`, id)
	if err != nil {
		return Incident{}, nil, false, fmt.Errorf("failed to read alerts: %w", err)
	}
	named, err := scanAlerts(rows)
	if err != nil {
		return Incident{}, nil, false, err
	}
	have := make(map[string]bool, len(named))
	for _, a := range named {
		have[a.ID] = true
	}
	for _, aid := range inc.Alerts {
		if !have[aid] {
			if a, found, err := storedAlert(ctx, db, aid); err != nil {
				return Incident{}, nil, false, err
			} else if found {
				named = append(named, a)
			}
			have[aid] = true
		}
	}
	for _, a := range named {
		if !slices.Contains(inc.Alerts, a.ID) && len(inc.Alerts) < maxIncidentAlerts {
			inc.Alerts = append(inc.Alerts, a.ID)
		}
	}
	return inc, named, true, nil
}

func (e *Engine) store() *store.DB {
	e.subMu.RLock()
	defer e.subMu.RUnlock()
	return e.db
}

func storedAlerts(ctx context.Context, db *store.DB, q AlertQuery) ([]Alert, error) {
	rows, err := db.QueryContext(ctx, `SELECT body, incident_id FROM detect_alerts
		WHERE ($1 = '' OR rule = $1) AND ($2 = '' OR severity = $2)
		ORDER BY raised DESC, id DESC LIMIT $3`, q.Rule, string(q.Severity), q.Limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read alerts: %w", err)
	}
	return scanAlerts(rows)
}

func storedAlert(ctx context.Context, db *store.DB, id string) (Alert, bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT body, incident_id FROM detect_alerts WHERE id = $1`, id)
	if err != nil {
		return Alert{}, false, fmt.Errorf("failed to read alert: %w", err)
	}
	as, err := scanAlerts(rows)
	if err != nil || len(as) == 0 {
		return Alert{}, false, err
	}
	return as[0], true, nil
}

// scanAlerts decodes rows of (body, incident_id): the incident is the one
// the alert was first stored with, which a later writer does not change.
func scanAlerts(rows *sql.Rows) ([]Alert, error) {
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var body, inc string
		if err := rows.Scan(&body, &inc); err != nil {
			return nil, fmt.Errorf("failed to read alerts: %w", err)
		}
		var a Alert
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			return nil, fmt.Errorf("failed to decode stored alert: %w", err)
		}
		a.Incident = inc
		out = append(out, a)
	}
	return out, rows.Err()
}

func scanBodies[T any](rows *sql.Rows, what string) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", what, err)
		}
		var v T
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return nil, fmt.Errorf("failed to decode stored %s: %w", what, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
