package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the scale-out driver
)

// OpenPostgres opens the control-plane database on PostgreSQL (a pgx DSN or URL).
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("failed to open postgres: %w", err)
	}
	db.SetMaxOpenConns(16)
	db.SetConnMaxIdleTime(time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to reach postgres: %w", err)
	}
	return &DB{DB: db, Dialect: "postgres"}, nil
}

// Open opens the database a DSN names: "postgres://…" or "postgresql://…" is
// PostgreSQL, anything else a SQLite file path.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if len(dsn) > 11 && (dsn[:11] == "postgres://" || (len(dsn) > 13 && dsn[:13] == "postgresql://")) {
		return OpenPostgres(ctx, dsn)
	}
	return OpenSQLite(dsn)
}
