// Package sqlite is the embedded durable backend of the issuance ledger: one
// SQLite file (pure-Go driver) in WAL mode with synchronous=FULL.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/store"
)

// Backend stores ledger entries in SQLite. Only the token hash is stored, as a
// BLOB primary key, never the token.
type Backend struct {
	db      *sql.DB
	inserts [len(insertRows)]*sql.Stmt
}

var _ ledger.Backend = (*Backend)(nil)

// Rows per INSERT statement: 11 parameters each stays far below SQLite's
// 32766 bound-parameter limit.
const rowsPerInsert = 256

var migrations = []string{
	`CREATE TABLE ledger_tokens (
		hash BLOB PRIMARY KEY,
		jti TEXT NOT NULL,
		kid TEXT NOT NULL,
		sub TEXT NOT NULL,
		aud TEXT NOT NULL,
		client_id TEXT NOT NULL,
		sid TEXT NOT NULL,
		client_ip TEXT NOT NULL,
		iat INTEGER NOT NULL,
		exp INTEGER NOT NULL,
		revoked INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	CREATE INDEX ledger_tokens_exp ON ledger_tokens(exp)`,
}

// Open opens (creating if needed) the ledger database at path, e.g.
// DATA/ledger.db. WAL with synchronous=FULL fsyncs the log on every commit, so
// an acknowledged put survives a process kill and an OS crash or power loss.
// Statement journals stay in memory (they only roll back one statement inside
// an open transaction; a crash discards the whole uncommitted transaction
// anyway), and the WAL is checkpointed every 8000 pages (~32 MiB) rather than
// 1000, so fewer commits carry a synced checkpoint.
func Open(path string) (*Backend, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=temp_store(MEMORY)&_pragma=wal_autocheckpoint(8000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	sdb := &store.DB{DB: db, Dialect: "sqlite"}
	if err := sdb.Migrate(context.Background(), "ledger", migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	ins, err := prepareInserts(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	return &Backend{db: db, inserts: ins}, nil
}

// Close closes the database.
func (b *Backend) Close() error {
	for _, st := range b.inserts {
		st.Close()
	}
	return b.db.Close()
}

// PutBatch inserts entries in one transaction. A hash already present is left
// as it is (a repeated put must not undo a revocation).
func (b *Backend) PutBatch(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to begin ledger batch: %w", err)
	}
	defer tx.Rollback()
	args := make([]any, 0, 11*min(len(entries), rowsPerInsert))
	for len(entries) > 0 {
		// Chunks of 256, 128, …, 1 rows: every statement is one of nine
		// prepared once per connection instead of parsed per batch.
		i := 0
		for insertRows[i] > len(entries) {
			i++
		}
		chunk := entries[:insertRows[i]]
		entries = entries[len(chunk):]
		args = args[:0]
		for _, e := range chunk {
			h := e.Hash
			args = append(args, h[:], e.JTI, e.KID, e.Subject, e.Audience, e.Client, e.Session, e.ClientIP,
				e.IssuedAt.Unix(), unixCeil(e.ExpiresAt), boolInt(e.Revoked))
		}
		if _, err := tx.StmtContext(ctx, b.inserts[i]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("failed to insert ledger batch: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to commit ledger batch: %w", err)
	}
	return nil
}

// insertRows are the row counts of the prepared multi-row INSERTs, largest first.
var insertRows = [...]int{rowsPerInsert, 128, 64, 32, 16, 8, 4, 2, 1}

// prepareInserts prepares the multi-row INSERT for each of insertRows.
func prepareInserts(db *sql.DB) ([len(insertRows)]*sql.Stmt, error) {
	var out [len(insertRows)]*sql.Stmt
	for i, n := range insertRows {
		st, err := db.Prepare(buildInsert(n))
		if err != nil {
			for _, p := range out[:i] {
				p.Close()
			}
			return out, fmt.Errorf("failed to prepare the ledger insert: %w", err)
		}
		out[i] = st
	}
	return out, nil
}

// buildInsert is the multi-row INSERT for n rows. It uses anonymous ?
// parameters: SQLite resolves $N names by a linear search per parameter, which
// made parsing a 256-row statement cost more than executing it.
func buildInsert(n int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO ledger_tokens (` + columns + `) VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,?,?,?,?,?,?,?,?)")
	}
	q.WriteString(` ON CONFLICT(hash) DO NOTHING`)
	return q.String()
}

// Revoke marks h revoked, inserting a bare revocation record if h is unknown
// so that a revocation is never lost.
func (b *Backend) Revoke(ctx context.Context, h ledger.Hash, exp time.Time) error {
	_, err := b.db.ExecContext(ctx, `INSERT INTO ledger_tokens (hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked)
		VALUES ($1,'','','','','','','',0,$2,1)
		ON CONFLICT(hash) DO UPDATE SET revoked=1, exp=MAX(exp, excluded.exp)`, h[:], unixCeil(exp))
	if err != nil {
		return fmt.Errorf("failed to revoke ledger entry: %w", err)
	}
	return nil
}

const columns = `hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked`

type scanner interface{ Scan(dest ...any) error }

func scanEntry(s scanner) (ledger.Entry, error) {
	var (
		e        ledger.Entry
		h        []byte
		iat, exp int64
		rev      int
	)
	if err := s.Scan(&h, &e.JTI, &e.KID, &e.Subject, &e.Audience, &e.Client, &e.Session, &e.ClientIP, &iat, &exp, &rev); err != nil {
		return e, err
	}
	if len(h) != len(e.Hash) {
		return e, fmt.Errorf("ledger row has a %d-byte hash", len(h))
	}
	copy(e.Hash[:], h)
	e.IssuedAt = time.Unix(iat, 0).UTC()
	e.ExpiresAt = time.Unix(exp, 0).UTC()
	e.Revoked = rev != 0
	return e, nil
}

// Get returns the entry of h or ledger.ErrNotFound.
func (b *Backend) Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error) {
	e, err := scanEntry(b.db.QueryRowContext(ctx, `SELECT `+columns+` FROM ledger_tokens WHERE hash=$1`, h[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
	}
	return e, nil
}

// LoadLive calls fn for every entry not yet expired at now, revoked ones included.
func (b *Backend) LoadLive(ctx context.Context, now time.Time, fn func(ledger.Entry) error) error {
	rows, err := b.db.QueryContext(ctx, `SELECT `+columns+` FROM ledger_tokens WHERE exp > $1`, now.Unix())
	if err != nil {
		return fmt.Errorf("failed to load ledger: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return fmt.Errorf("failed to load ledger: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("failed to load ledger: %w", err)
	}
	return nil
}

// DeleteExpired deletes entries expired at now and returns how many.
func (b *Backend) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	res, err := b.db.ExecContext(ctx, `DELETE FROM ledger_tokens WHERE exp <= $1`, now.Unix())
	if err != nil {
		return 0, fmt.Errorf("failed to delete expired ledger entries: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("failed to delete expired ledger entries: %w", err)
	}
	return int(n), nil
}

// unixCeil rounds up so a stored entry never expires before its token.
func unixCeil(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
