package forensics

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Store defaults.
const (
	DefaultMemoryLimit = "4GB"
	DefaultThreads     = 2
	// MaxSQLRows bounds what [Store.SQL] returns; larger answers need a LIMIT.
	MaxSQLRows = 100_000
)

// Options configure a [Store]. Zero values take the defaults.
type Options struct {
	// AllowPartial skips unreadable files instead of failing a scope; the
	// scope and its exports are then marked partial and name the files.
	AllowPartial bool
	// MemoryLimit is DuckDB's memory_limit (DefaultMemoryLimit).
	MemoryLimit string
	// Threads is DuckDB's thread count (DefaultThreads).
	Threads int
	// TempDir is where DuckDB spills; a fresh directory under os.TempDir when empty.
	TempDir string
	// Expander adds data subjects known only outside the events; optional.
	Expander Expander
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// ignoreTotals counts every scope from the rows (tests compare the two).
	ignoreTotals bool
}

// Expander adds data subjects that events alone cannot name: people whose
// data sits in a member's records, such as the recipients (members or not) in
// a member's address book. Scope calls Expand once per exposed member with the
// data classes exposed for that member; each returned Related is exposed over
// the same period as the member. The simulator and a production deployment
// supply it from the customer database.
type Expander interface {
	Expand(ctx context.Context, subject string, classes []string) ([]Related, error)
}

// Related is a data subject exposed through another subject's records.
type Related struct {
	Subject     string
	DataClasses []string
}

// Store queries the event partitions under a directory with DuckDB. It is
// safe for concurrent use; compaction and retention wait for running scopes.
type Store struct {
	dir     string
	opts    Options
	db      *sql.DB
	tempDir string
	ownTemp bool
	mu      sync.RWMutex // held for reading by scans, for writing by Compact and Retain
	seq     atomic.Uint64
	closed  atomic.Bool
}

// Open opens the store over dir with default options.
func Open(dir string) (*Store, error) { return OpenWith(dir, Options{}) }

// OpenWith opens the store over dir.
func OpenWith(dir string, opts Options) (*Store, error) {
	if opts.MemoryLimit == "" {
		opts.MemoryLimit = DefaultMemoryLimit
	}
	if opts.Threads <= 0 {
		opts.Threads = DefaultThreads
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, eventsDir), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create event directory: %w", err)
	}
	s := &Store{dir: abs, opts: opts, tempDir: opts.TempDir}
	if s.tempDir == "" {
		if s.tempDir, err = os.MkdirTemp("", "custos-duckdb-"); err != nil {
			return nil, fmt.Errorf("failed to create spill directory: %w", err)
		}
		s.ownTemp = true
	}
	q := url.Values{}
	q.Set("memory_limit", opts.MemoryLimit)
	q.Set("threads", strconv.Itoa(opts.Threads))
	q.Set("preserve_insertion_order", "false")
	q.Set("enable_object_cache", "true")
	q.Set("temp_directory", s.tempDir)
	q.Set("autoinstall_known_extensions", "false")
	q.Set("autoload_known_extensions", "false")
	db, err := openDuckDB("?" + q.Encode())
	if err != nil {
		s.cleanup()
		return nil, err
	}
	s.db = db
	// Investigator SQL may read only the event files and the spill directory.
	lock := []string{
		fmt.Sprintf("SET allowed_directories = [%s, %s]", sqlQuote(s.dir+"/"), sqlQuote(s.tempDir+"/")),
		"SET enable_external_access = false",
		"SET lock_configuration = true",
	}
	for _, stmt := range lock {
		if _, err := s.db.Exec(stmt); err != nil {
			s.Close()
			return nil, fmt.Errorf("failed to configure duckdb (%s): %w", stmt, err)
		}
	}
	return s, nil
}

// Close releases DuckDB and the spill directory.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var err error
	if s.db != nil {
		err = s.db.Close()
	}
	s.cleanup()
	return err
}

func (s *Store) cleanup() {
	if s.ownTemp {
		os.RemoveAll(s.tempDir)
	}
}

// Dir is the directory the store reads.
func (s *Store) Dir() string { return s.dir }

func sqlQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }

// emptyEvents is the events view when no file exists yet.
const emptyEvents = `SELECT NULL::TIMESTAMP AS time, NULL::VARCHAR AS gateway, NULL::VARCHAR AS request_id,
 NULL::VARCHAR AS method, NULL::VARCHAR AS route, NULL::VARCHAR AS path, NULL::INTEGER AS status,
 NULL::BIGINT AS bytes, NULL::BIGINT AS latency_us, NULL::VARCHAR AS src_ip, NULL::VARCHAR AS country,
 NULL::UINTEGER AS asn, NULL::VARCHAR AS user_agent, NULL::VARCHAR AS token_jti, NULL::VARCHAR AS token_kid,
 NULL::VARCHAR AS token_sub, NULL::VARCHAR AS token_aud, NULL::BIGINT AS token_iat, NULL::BIGINT AS token_exp,
 NULL::VARCHAR AS verdict, NULL::VARCHAR AS reason, NULL::VARCHAR AS subject, NULL::VARCHAR[] AS data_classes,
 NULL::VARCHAR AS data_class_set, NULL::UBIGINT AS subject_id, NULL::BOOLEAN AS subject_text,
 NULL::UINTEGER AS src_ip4, NULL::BOOLEAN AS exposed,
 NULL::VARCHAR AS hour WHERE false`

// SQL runs one read-only statement for an investigator over the view events
// (every sealed part, with the partition column hour). At most [MaxSQLRows]
// rows are returned; more is an error asking for a LIMIT.
func (s *Store) SQL(ctx context.Context, query string) (columns []string, rows [][]any, err error) {
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	hours, err := listHours(s.dir)
	if err != nil {
		return nil, nil, err
	}
	view := emptyEvents
	for _, h := range hours {
		if len(h.Parts) > 0 {
			glob := filepath.Join(s.dir, eventsDir, hourPrefix+"*", "*"+partSuffix)
			view = fmt.Sprintf("SELECT * FROM read_parquet(%s, hive_partitioning = true, hive_types = {'hour': 'VARCHAR'}, union_by_name = true)", sqlQuote(glob))
			break
		}
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "CREATE OR REPLACE TEMP VIEW events AS "+view); err != nil {
		return nil, nil, fmt.Errorf("failed to define events: %w", err)
	}
	columns, rows, err = selectRows(ctx, conn, query)
	if err != nil {
		return nil, nil, err
	}
	return columns, rows, nil
}
