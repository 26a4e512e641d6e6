package keys

import (
	"context"
	"fmt"
)

// Reload re-reads every key from the control-plane store. Authority replicas
// that share the store call it when another replica announces a change (over
// the bus), so a key revoked anywhere stops signing and verifying here too.
// Subscribers hear about every key whose state changed.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	old := m.snap.Load()
	err := m.load(ctx)
	cur := m.snap.Load()
	m.mu.Unlock()
	if err != nil {
		return err
	}
	var changed []Key
	for kid, r := range cur.keys {
		if o, ok := old.keys[kid]; !ok || o.key.State != r.key.State {
			changed = append(changed, r.key)
		}
	}
	m.notify(changed)
	return nil
}

// Sync reloads the keys if their states in the store differ from this
// replica's view. It is the durable backstop of the bus in a scale-out
// deployment: run every half second, a key revoked at a replica whose
// announcement this one missed stops verifying here within that time.
func (m *Manager) Sync(ctx context.Context) error {
	rows, err := m.db.QueryContext(ctx, `SELECT kid, state FROM keys_keys`)
	if err != nil {
		return fmt.Errorf("failed to read key states: %w", err)
	}
	defer rows.Close()
	snap := m.snap.Load()
	n, differ := 0, false
	for rows.Next() {
		var kid string
		var st State
		if err := rows.Scan(&kid, &st); err != nil {
			return fmt.Errorf("failed to read key states: %w", err)
		}
		n++
		if r, ok := snap.keys[kid]; !ok || r.key.State != st {
			differ = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("failed to read key states: %w", err)
	}
	if !differ && n == len(snap.keys) {
		return nil
	}
	return m.Reload(ctx)
}
