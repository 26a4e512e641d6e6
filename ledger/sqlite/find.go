package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-dev/custos/ledger"
)

// Find returns the hashes of live tokens (not expired, not revoked) with
// the given jti, or for subject sub when jti is empty, each once. A search
// naming neither is refused (ledger.ErrNoSearchTarget). It is for
// containment (revoke one token, or force a subject to log in again): rare,
// so it scans the live rows rather than keeping two more indexes on the
// issuance path.
func (b *Backend) Find(ctx context.Context, jti, sub string, now time.Time) ([]ledger.Hash, error) {
	col, arg := "jti", jti
	switch {
	case jti != "":
	case sub != "":
		col, arg = "sub", sub
	default:
		return nil, ledger.ErrNoSearchTarget
	}
	q := `SELECT DISTINCT hash FROM ledger_records WHERE ` + col + `=? AND exp>? AND revoked=0
		AND hash NOT IN (SELECT hash FROM ledger_records WHERE revoked=1 AND exp>?)`
	rows, err := b.db.QueryContext(ctx, q, arg, now.Unix(), now.Unix())
	if err != nil {
		return nil, fmt.Errorf("failed to search the ledger: %w", err)
	}
	defer rows.Close()
	var out []ledger.Hash
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var h ledger.Hash
		if len(raw) != len(h) {
			return nil, fmt.Errorf("ledger row with a %d-byte hash", len(raw))
		}
		copy(h[:], raw)
		out = append(out, h)
	}
	return out, rows.Err()
}
