//go:build !noduckdb

package forensics

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"

	"github.com/duckdb/duckdb-go/v2"
)

// HasDuckDB reports whether this binary carries DuckDB; the stateless roles
// are built without it (-tags noduckdb).
const HasDuckDB = true

// openDuckDB opens an in-process DuckDB database with the given DSN.
func openDuckDB(dsn string) (*sql.DB, error) {
	c, err := duckdb.NewConnector(dsn, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to open duckdb: %w", err)
	}
	return sql.OpenDB(c), nil
}

// selectRows runs query on conn after checking that it is one SELECT.
func selectRows(ctx context.Context, conn *sql.Conn, query string) (columns []string, rows [][]any, err error) {
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*duckdb.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		st, err := c.Prepare(query) // refuses more than one statement
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotReadOnly, err)
		}
		defer st.Close()
		stmt := st.(*duckdb.Stmt)
		typ, err := stmt.StatementType()
		if err != nil {
			return fmt.Errorf("failed to inspect query: %w", err)
		}
		if typ != duckdb.STATEMENT_TYPE_SELECT {
			return ErrNotReadOnly
		}
		r, err := stmt.QueryContext(ctx, nil)
		if err != nil {
			return fmt.Errorf("failed to run query: %w", err)
		}
		defer r.Close()
		columns = r.Columns()
		for {
			dest := make([]driver.Value, len(columns))
			if err := r.Next(dest); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return fmt.Errorf("failed to read result: %w", err)
			}
			if len(rows) == MaxSQLRows {
				return fmt.Errorf("failed to run query: more than %d rows; add a LIMIT", MaxSQLRows)
			}
			row := make([]any, len(dest))
			for i, v := range dest {
				row[i] = v
			}
			rows = append(rows, row)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return columns, rows, nil
}
