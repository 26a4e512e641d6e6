//go:build noduckdb

package forensics

import (
	"context"
	"database/sql"
	"errors"
)

// HasDuckDB reports whether this binary carries DuckDB; the stateless roles
// are built without it (-tags noduckdb).
const HasDuckDB = false

// ErrNoDuckDB is returned by [Open] in a binary built with -tags noduckdb:
// it writes event files but cannot query them.
var ErrNoDuckDB = errors.New("this custos is built without DuckDB (-tags noduckdb): scope, sql and the console's event views need the full build")

func openDuckDB(string) (*sql.DB, error) { return nil, ErrNoDuckDB }

func selectRows(context.Context, *sql.Conn, string) ([]string, [][]any, error) {
	return nil, nil, ErrNoDuckDB
}
