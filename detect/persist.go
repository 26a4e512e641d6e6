package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
	db := e.db
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
	err := e.write(ctx, db, as, is, xs)
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

func (e *Engine) write(ctx context.Context, db *store.DB, as []Alert, is []Incident, xs []ActionRecord) (err error) {
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
			ON CONFLICT (id) DO UPDATE SET first_seen=excluded.first_seen, last_seen=excluded.last_seen, count=excluded.count, body=excluded.body`,
			a.ID, a.Rule, string(a.Severity), a.Entity, a.Incident, a.FirstSeen.UnixNano(), a.LastSeen.UnixNano(), a.Raised.UnixNano(), a.Count, string(body)); err != nil {
			return err
		}
	}
	for _, i := range is {
		body, _ := json.Marshal(i)
		if _, err = tx.ExecContext(ctx, `INSERT INTO detect_incidents (id, awareness, last_seen, severity, body) VALUES ($1,$2,$3,$4,$5)
			ON CONFLICT (id) DO UPDATE SET last_seen=excluded.last_seen, severity=excluded.severity, body=excluded.body`,
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

// StoredAlerts reads alerts back from the store, newest first, at most limit.
func StoredAlerts(ctx context.Context, db *store.DB, limit int) ([]Alert, error) {
	rows, err := db.QueryContext(ctx, `SELECT body FROM detect_alerts ORDER BY raised DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("failed to read alerts: %w", err)
		}
		var a Alert
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			return nil, fmt.Errorf("failed to decode stored alert: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
