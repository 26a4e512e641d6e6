// Package sqlite is the embedded durable backend of the issuance ledger: one
// SQLite file (pure-Go driver) in WAL mode with synchronous=FULL.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/store"
)

// Backend stores ledger entries in SQLite. Only the token hash is stored, as a
// BLOB primary key, never the token.
type Backend struct {
	db      *sql.DB
	inserts [len(insertRows)]*sql.Stmt

	mu     sync.Mutex
	nextID int64 // the row id the next record gets
}

var _ ledger.RefBackend = (*Backend)(nil)

// Rows per INSERT statement: 12 parameters each stays far below SQLite's
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

	// Version 2: records appended in issuance order under an integer id,
	// with no index on the hash. The in-memory index keeps each live hash's
	// id (ledger.RefBackend), so a put writes to the right edge of the table
	// instead of to a random page of a hash-keyed B-tree: 3.5× less CPU per
	// put with large batches (docs/bench/ledger.md). Revocations are records
	// of their own (revoked=1), so the table is only ever appended to and
	// swept; a hash's revoked record wins over its issuance.
	`CREATE TABLE ledger_records (
		id INTEGER PRIMARY KEY,
		hash BLOB NOT NULL,
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
	);
	INSERT INTO ledger_records (hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked)
		SELECT hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked FROM ledger_tokens ORDER BY iat;
	DROP TABLE ledger_tokens;
	CREATE INDEX ledger_records_exp ON ledger_records(exp)`,
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
	var last int64
	if err := db.QueryRow(`SELECT COALESCE(MAX(id), 0) FROM ledger_records`).Scan(&last); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	ins, err := prepareInserts(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open ledger %s: %w", path, err)
	}
	return &Backend{db: db, inserts: ins, nextID: last + 1}, nil
}

// Close closes the database.
func (b *Backend) Close() error {
	for _, st := range b.inserts {
		st.Close()
	}
	return b.db.Close()
}

// PutBatch appends entries in one transaction and sets each one's Ref to its
// row id. A repeated put of a hash adds a record; it cannot undo a revocation,
// whose own record wins.
func (b *Backend) PutBatch(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	b.mu.Lock() // ids are handed out in commit order
	defer b.mu.Unlock()
	id := b.nextID
	for i := range entries {
		entries[i].Ref = uint64(id + int64(i))
	}
	// Ids of a batch that fails are not reused: a gap is harmless.
	b.nextID += int64(len(entries))
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to begin ledger batch: %w", err)
	}
	defer tx.Rollback()
	args := make([]any, 0, 12*min(len(entries), rowsPerInsert))
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
			args = append(args, int64(e.Ref), h[:], e.JTI, e.KID, e.Subject, e.Audience, e.Client, e.Session, e.ClientIP,
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
	q.WriteString(`INSERT INTO ledger_records (id, ` + columns + `) VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	return q.String()
}

// Revoke appends a revocation record for h, valid until exp, whether or not
// h was issued here, so that a revocation is never lost.
func (b *Backend) Revoke(ctx context.Context, h ledger.Hash, exp time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.db.ExecContext(ctx, `INSERT INTO ledger_records (id, hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked)
		VALUES ($1,$2,'','','','','','','',0,$3,1)`, b.nextID, h[:], unixCeil(exp))
	b.nextID++
	if err != nil {
		return fmt.Errorf("failed to revoke ledger entry: %w", err)
	}
	return nil
}

const columns = `hash, jti, kid, sub, aud, client_id, sid, client_ip, iat, exp, revoked`

type scanner interface{ Scan(dest ...any) error }

func scanEntry(s scanner) (ledger.Entry, error) {
	var (
		e            ledger.Entry
		h            []byte
		id, iat, exp int64
		rev          int
	)
	if err := s.Scan(&id, &h, &e.JTI, &e.KID, &e.Subject, &e.Audience, &e.Client, &e.Session, &e.ClientIP, &iat, &exp, &rev); err != nil {
		return e, err
	}
	if len(h) != len(e.Hash) {
		return e, fmt.Errorf("ledger row has a %d-byte hash", len(h))
	}
	copy(e.Hash[:], h)
	e.Ref = uint64(id)
	e.IssuedAt = time.Unix(iat, 0).UTC()
	e.ExpiresAt = time.Unix(exp, 0).UTC()
	e.Revoked = rev != 0
	return e, nil
}

// GetRef returns the record with row id ref, which must be h's, or
// ledger.ErrNotFound. It does not see a later revocation record: the ledger
// takes that from its index.
func (b *Backend) GetRef(ctx context.Context, ref uint64, h ledger.Hash) (ledger.Entry, error) {
	e, err := scanEntry(b.db.QueryRowContext(ctx, `SELECT id, `+columns+` FROM ledger_records WHERE id=$1`, int64(ref)))
	if errors.Is(err, sql.ErrNoRows) || (err == nil && e.Hash != h) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
	}
	return e, nil
}

// Get returns the record of h, revoked if any record of h is, or
// ledger.ErrNotFound. Without an index on the hash it reads the whole table:
// the ledger itself reads through GetRef, and Get serves tools and tests.
func (b *Backend) Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error) {
	e, err := scanEntry(b.db.QueryRowContext(ctx, `SELECT id, `+columns+` FROM ledger_records WHERE hash=$1
		ORDER BY jti = '', id LIMIT 1`, h[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
	}
	var revoked int
	if err := b.db.QueryRowContext(ctx, `SELECT MAX(revoked) FROM ledger_records WHERE hash=$1`, h[:]).Scan(&revoked); err != nil {
		return ledger.Entry{}, fmt.Errorf("failed to read ledger entry: %w", err)
	}
	e.Revoked = revoked != 0
	return e, nil
}

// LoadLive calls fn for every record not yet expired at now, in the order
// they were written, revocation records included.
func (b *Backend) LoadLive(ctx context.Context, now time.Time, fn func(ledger.Entry) error) error {
	rows, err := b.db.QueryContext(ctx, `SELECT id, `+columns+` FROM ledger_records WHERE exp > $1 ORDER BY id`, now.Unix())
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
	res, err := b.db.ExecContext(ctx, `DELETE FROM ledger_records WHERE exp <= $1`, now.Unix())
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
