// Package store opens the control-plane database (SQLite embedded, PostgreSQL
// for scale-out) and runs each component's versioned migrations.
//
// Components own their tables: each calls Migrate with its name and an ordered
// list of statements, and writes SQL with $1-style placeholders, which both
// SQLite and PostgreSQL accept.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"

	_ "modernc.org/sqlite" // the embedded default driver
)

// DB is the control-plane database.
type DB struct {
	*sql.DB
	Dialect string // "sqlite" or "postgres"

	errs *atomic.Uint64 // failed statements (PostgreSQL only)
}

// Errors is how many statements have failed on PostgreSQL since Open, for
// metrics; 0 on SQLite, where a failure is local and logged by its caller.
func (d *DB) Errors() uint64 {
	if d.errs == nil {
		return 0
	}
	return d.errs.Load()
}

// OpenSQLite opens (creating if needed) the SQLite database at path with WAL and
// a busy timeout, so several components can share it.
func OpenSQLite(path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	return &DB{DB: db, Dialect: "sqlite"}, nil
}

// Migrate applies, in one transaction each, the steps of component that have not
// been applied yet. Step i is version i+1; steps must never be edited once
// released, only appended.
func (db *DB) Migrate(ctx context.Context, component string, steps []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("failed to create schema_migrations: %w", err)
	}
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version),0) FROM schema_migrations WHERE component=$1`, component).Scan(&have); err != nil {
		return fmt.Errorf("failed to read %s schema version: %w", component, err)
	}
	for i := have; i < len(steps); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, stmt := range splitStatements(steps[i]) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				return fmt.Errorf("failed to migrate %s to version %d: %w", component, i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(component, version) VALUES ($1, $2)`, component, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("failed to migrate %s to version %d: %w", component, i+1, err)
		}
	}
	return nil
}

func splitStatements(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ";") {
		if strings.TrimSpace(p) != "" {
			out = append(out, p)
		}
	}
	return out
}
