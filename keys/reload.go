package keys

import "context"

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
