package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/store"
)

// oauthMigrations add what the standard token endpoint needs: a client's
// registered key set (private_key_jwt) and DPoP requirement, and the
// one-time identifiers already used.
var oauthMigrations = []string{
	`ALTER TABLE authority_clients ADD COLUMN jwks TEXT NOT NULL DEFAULT '';
	ALTER TABLE authority_clients ADD COLUMN jwks_uri TEXT NOT NULL DEFAULT '';
	ALTER TABLE authority_clients ADD COLUMN require_dpop INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE authority_seen (k TEXT PRIMARY KEY, exp BIGINT NOT NULL);
	CREATE INDEX authority_seen_exp ON authority_seen(exp)`,
}

// seenStore remembers one-time identifiers (the jti of a client assertion or
// of an exchanged ID token) in the control-plane store until they expire.
// Every authority replica shares that store, so an identifier used at one
// replica is refused at all of them.
type seenStore struct {
	db  *store.DB
	now func() time.Time
	n   atomic.Uint64
}

// sweepEvery: one insert in this many also deletes expired identifiers.
const sweepEvery = 256

// first records id in namespace ns until exp and reports whether this is its
// first use. An identifier whose earlier record has expired counts as new.
// A store that cannot answer is an error (the caller refuses).
func (s *seenStore) first(ctx context.Context, ns, id string, exp time.Time) (bool, error) {
	h := sha256.Sum256([]byte(ns + "\x00" + id))
	k := hex.EncodeToString(h[:])
	now := s.now().Unix()
	if s.n.Add(1)%sweepEvery == 0 {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM authority_seen WHERE exp < $1`, now); err != nil {
			return false, fmt.Errorf("failed to sweep used identifiers: %w", err)
		}
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO authority_seen(k, exp) VALUES ($1, $2)
		ON CONFLICT (k) DO UPDATE SET exp = excluded.exp WHERE authority_seen.exp < $3`, k, exp.Unix(), now)
	if err != nil {
		return false, fmt.Errorf("failed to record a used identifier: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to record a used identifier: %w", err)
	}
	return n == 1, nil
}
