package sealed

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A keyring shared by authority replicas: the same sealed image as the file
// (AES-256-GCM under the KEK, header and all), kept in one row of the
// control-plane database so every replica signs with the same keys. Only
// ciphertext reaches the database; each replica gets the KEK from its
// environment or a file on another volume, never from the database or the
// data directory. Writes are compare-and-swap on a version number: a replica
// that lost a race reads the current image and tries again, so two replicas
// adding keys at once both keep theirs.

// errConflict: another replica changed the shared keyring since it was read.
var errConflict = errors.New("sealed: shared keyring changed concurrently")

// casAttempts bounds the retries of one change of the shared keyring.
const casAttempts = 8

// dbTimeout bounds one round trip to the database.
const dbTimeout = 5 * time.Second

const keyringTable = `CREATE TABLE IF NOT EXISTS keys_sealed_keyring (
	id INTEGER PRIMARY KEY CHECK (id = 0),
	image BYTEA NOT NULL,
	version BIGINT NOT NULL
)`

// OpenPostgres opens the keyring kept in the PostgreSQL database db (table
// keys_sealed_keyring, in the connection's search path), sealed under kek,
// creating an empty one if the table holds none. A replica with another KEK
// gets ErrWrongKEK; the image is authenticated as a file's is.
func OpenPostgres(ctx context.Context, db *sql.DB, kek KEK) (*Keyring, error) {
	kdf, err := kek.kdf()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, keyringTable); err != nil {
		return nil, fmt.Errorf("failed to create the shared keyring's table: %w", err)
	}
	b, v, err := loadImage(ctx, db)
	if errors.Is(err, sql.ErrNoRows) {
		// The first replica seals an empty keyring; if another did so at the
		// same moment, its image wins and is read below.
		fresh, ferr := newEmpty(kek, kdf)
		if ferr != nil {
			return nil, ferr
		}
		img, _, ferr := fresh.sealLocked(fresh.keys)
		if ferr != nil {
			return nil, ferr
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO keys_sealed_keyring (id, image, version) VALUES (0, $1, 1) ON CONFLICT (id) DO NOTHING`, img); err != nil {
			return nil, fmt.Errorf("failed to create the shared keyring: %w", err)
		}
		b, v, err = loadImage(ctx, db)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the shared keyring: %w", err)
	}
	k, err := decode(b, kek)
	if err != nil {
		return nil, fmt.Errorf("shared keyring: %w", err)
	}
	k.db, k.version, k.kek, k.path = db, v, kek, "postgres:keys_sealed_keyring"
	return k, nil
}

func loadImage(ctx context.Context, db *sql.DB) ([]byte, int64, error) {
	var b []byte
	var v int64
	err := db.QueryRowContext(ctx, `SELECT image, version FROM keys_sealed_keyring WHERE id = 0`).Scan(&b, &v)
	if err == nil && len(b) > maxFileSize {
		return nil, 0, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, maxFileSize)
	}
	return b, v, err
}

// saveDB replaces the image if nobody changed it since this replica read it.
func (k *Keyring) saveDB(img []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	res, err := k.db.ExecContext(ctx, `UPDATE keys_sealed_keyring SET image = $1, version = version + 1 WHERE id = 0 AND version = $2`, img, k.version)
	if err != nil {
		return fmt.Errorf("failed to write the shared keyring: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("failed to write the shared keyring: %w", err)
	}
	if n == 0 {
		return errConflict
	}
	k.version++
	return nil
}

// reloadLocked reads the shared image again: keys another replica added
// appear, keys it destroyed stop signing here. Entries still present keep
// their identity, so signers handed out stay valid.
func (k *Keyring) reloadLocked() error {
	if k.closed {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	b, v, err := loadImage(ctx, k.db)
	if err != nil {
		return fmt.Errorf("failed to read the shared keyring: %w", err)
	}
	if v == k.version {
		return nil
	}
	nk, err := decode(b, k.kek)
	if err != nil {
		return fmt.Errorf("shared keyring: %w", err)
	}
	for id, e := range k.keys {
		if _, ok := nk.keys[id]; !ok {
			e.gone.Store(true)
		}
	}
	for id, e := range nk.keys {
		if old, ok := k.keys[id]; ok {
			nk.keys[id] = old
		} else {
			nk.keys[id] = e
		}
	}
	k.keys, k.hdr, k.aead, k.version = nk.keys, nk.hdr, nk.aead, v
	return nil
}
