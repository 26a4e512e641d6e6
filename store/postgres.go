package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // the scale-out driver
)

// errorTracer counts statements that PostgreSQL or the connection failed
// (a query without rows is not a failure).
type errorTracer struct{ n atomic.Uint64 }

func (t *errorTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (t *errorTracer) TraceQueryEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if d.Err != nil && !errors.Is(d.Err, pgx.ErrNoRows) {
		t.n.Add(1)
	}
}

// OpenPostgres opens the control-plane database on PostgreSQL (a pgx DSN or URL).
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("failed to open postgres: %w", err)
	}
	tr := &errorTracer{}
	cc.Tracer = tr
	db := stdlib.OpenDB(*cc)
	db.SetMaxOpenConns(16)
	db.SetConnMaxIdleTime(time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to reach postgres: %w", err)
	}
	return &DB{DB: db, Dialect: "postgres", errs: &tr.n}, nil
}

// Open opens the database a DSN names: "postgres://…" or "postgresql://…" is
// PostgreSQL, anything else a SQLite file path.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if len(dsn) > 11 && (dsn[:11] == "postgres://" || (len(dsn) > 13 && dsn[:13] == "postgresql://")) {
		return OpenPostgres(ctx, dsn)
	}
	return OpenSQLite(dsn)
}
