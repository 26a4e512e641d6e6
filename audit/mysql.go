package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	tmysql "github.com/transparency-dev/tessera/storage/mysql"
	"golang.org/x/mod/sumdb/note"
)

// The deployment's one log on MySQL or MariaDB: every replica appends to the
// same tree through Tessera's MySQL driver, which sequences each batch in a
// transaction holding the tree state's row lock, so replicas never fork the
// tree; whichever replica's turn it is signs the next checkpoint, with the one
// checkpoint key all replicas share. The database also records the log's
// origin and verifier key, and a replica whose signer does not match them is
// refused: two keys (or two names) for one tree would look like a fork.

// ErrWrongLog: the database holds a log of another origin or checkpoint key.
var ErrWrongLog = errors.New("audit: the database holds another log")

// tesseraSchema is Tessera's MySQL schema (storage/mysql/schema.sql of
// github.com/transparency-dev/tessera v1.0.4), which the driver expects but
// does not create, plus custos's record of the log's identity.
var tesseraSchema = []string{
	"CREATE TABLE IF NOT EXISTS `Tessera` (`id` TINYINT UNSIGNED NOT NULL, `compatibilityVersion` BIGINT UNSIGNED NOT NULL, PRIMARY KEY (`id`))",
	"INSERT IGNORE INTO `Tessera` (`id`, `compatibilityVersion`) VALUES (0, 1)",
	"CREATE TABLE IF NOT EXISTS `Checkpoint` (`id` TINYINT UNSIGNED NOT NULL, `note` MEDIUMBLOB NOT NULL, `published_at` BIGINT NOT NULL, PRIMARY KEY(`id`))",
	"CREATE TABLE IF NOT EXISTS `TreeState` (`id` TINYINT UNSIGNED NOT NULL, `size` BIGINT UNSIGNED NOT NULL, `root` TINYBLOB NOT NULL, PRIMARY KEY(`id`))",
	"CREATE TABLE IF NOT EXISTS `Subtree` (`level` TINYINT UNSIGNED NOT NULL, `index` BIGINT UNSIGNED NOT NULL, `nodes` MEDIUMBLOB NOT NULL, PRIMARY KEY(`level`, `index`))",
	"CREATE TABLE IF NOT EXISTS `TiledLeaves` (`tile_index` BIGINT UNSIGNED NOT NULL, `size` SMALLINT UNSIGNED NOT NULL, `data` LONGBLOB NOT NULL, PRIMARY KEY(`tile_index`))",
	"CREATE TABLE IF NOT EXISTS `CustosLog` (`id` TINYINT UNSIGNED NOT NULL, `origin` VARCHAR(255) NOT NULL, `vkey` VARCHAR(512) NOT NULL, PRIMARY KEY(`id`))",
}

// MySQLDSN turns a mysql://user:password@host:port/database?param=value URL
// into the Go driver's DSN. The database name is required.
func MySQLDSN(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "mysql" || p.Host == "" {
		return "", fmt.Errorf("audit log %q: want mysql://user[:password]@host[:port]/database", redactURL(u))
	}
	db := strings.TrimPrefix(p.Path, "/")
	if db == "" || strings.Contains(db, "/") {
		return "", fmt.Errorf("audit log %q: name one database", redactURL(u))
	}
	cfg := gomysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", p.Host, db
	if p.Port() == "" {
		cfg.Addr = p.Host + ":3306"
	}
	if p.User != nil {
		cfg.User = p.User.Username()
		cfg.Passwd, _ = p.User.Password()
	}
	cfg.Params = map[string]string{}
	for k, v := range p.Query() {
		cfg.Params[k] = v[len(v)-1]
	}
	return cfg.FormatDSN(), nil
}

func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable)"
	}
	return p.Redacted()
}

// OpenMySQL opens (creating its tables if needed) the shared log in the
// MySQL or MariaDB database named by dbURL (mysql://…). Checkpoints are
// signed by signer, which must name its verifier key (NewNoteSigner's does):
// the first replica records origin and key in the database, the others must
// match them. dir keeps this replica's side files (evidence holds, digest
// indexes). Appends return once the entry is committed in the database.
func OpenMySQL(ctx context.Context, dbURL, dir string, signer note.Signer, opts Options) (*Log, error) {
	if signer == nil {
		return nil, fmt.Errorf("%w: nil signer", ErrBadKey)
	}
	vk, ok := signer.(verifierKeyer)
	if !ok {
		return nil, fmt.Errorf("%w: the signer does not name its verifier key", ErrBadKey)
	}
	opts = opts.withDefaults()
	dsn, err := MySQLDSN(dbURL)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create log directory: %w", err)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return nil, fmt.Errorf("failed to open the audit database: %w", err)
	}
	fail := func(err error) (*Log, error) { db.Close(); return nil, err }
	for _, stmt := range tesseraSchema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fail(fmt.Errorf("failed to create the audit log's tables: %w", err))
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT IGNORE INTO `CustosLog` (`id`, `origin`, `vkey`) VALUES (0, ?, ?)", signer.Name(), vk.VerifierKey()); err != nil {
		return fail(fmt.Errorf("failed to record the log's key: %w", err))
	}
	var origin, key string
	if err := db.QueryRowContext(ctx, "SELECT `origin`, `vkey` FROM `CustosLog` WHERE `id` = 0").Scan(&origin, &key); err != nil {
		return fail(fmt.Errorf("failed to read the log's key: %w", err))
	}
	if origin != signer.Name() || key != vk.VerifierKey() {
		return fail(fmt.Errorf("%w: it is %q with key %s; this replica signs as %q with %s (replicas must share the checkpoint key)",
			ErrWrongLog, origin, key, signer.Name(), vk.VerifierKey()))
	}
	if err := writeFileAtomic(dir+"/"+vkeyFile, []byte(key+"\n")); err != nil {
		return fail(fmt.Errorf("failed to write verifier key: %w", err))
	}
	st, err := tmysql.New(ctx, db)
	if err != nil {
		return fail(fmt.Errorf("failed to open log storage: %w", err))
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	interval := max(opts.CheckpointInterval, DefaultCheckpointInterval) // the driver's minimum
	ao := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(opts.BatchMaxSize, opts.BatchMaxAge).
		WithCheckpointInterval(interval)
	app, shutdown, reader, err := tessera.NewAppender(bg, st, ao)
	if err != nil {
		cancel()
		return fail(fmt.Errorf("failed to open log appender: %w", err))
	}
	return &Log{dir: dir, now: opts.Now, reader: reader, shutdown: shutdown, cancel: cancel,
		appender: app, db: db, vkey: key}, nil
}

// appendShared adds entries through the Tessera appender (the shared log)
// and waits until each is committed; it returns the index of the first.
// Entries of one call are contiguous only when no other replica appends in
// between, so callers of the shared log use the returned index of each.
func (l *Log) appendShared(ctx context.Context, data [][]byte) ([]uint64, error) {
	futs := make([]tessera.IndexFuture, len(data))
	for i, d := range data {
		futs[i] = l.appender.Add(ctx, tessera.NewEntry(d))
	}
	idx := make([]uint64, len(data))
	for i, f := range futs {
		x, err := f()
		if err != nil {
			return nil, fmt.Errorf("failed to append to audit log: %w", err)
		}
		idx[i] = x.Index
	}
	return idx, nil
}

// Ping reports whether the shared log's database answers (readiness); a log
// on local disk has nothing to ping.
func (l *Log) Ping(ctx context.Context) error {
	if l.db == nil {
		return nil
	}
	return l.db.PingContext(ctx)
}

// VerifierKey is the note verifier key of the log's checkpoints (the line
// witnesses and auditors need to check them).
func (l *Log) VerifierKey() (string, error) {
	if l.vkey != "" {
		return l.vkey, nil
	}
	b, err := os.ReadFile(l.dir + "/" + vkeyFile)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoVerifierKey, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// mysqlSource reads tlog-tiles resources out of the shared log's database,
// cut to the width a partial path asks for.
type mysqlSource struct {
	url  string
	once sync.Once
	st   *tmysql.Storage
	err  error
}

func (m *mysqlSource) storage(ctx context.Context) (*tmysql.Storage, error) {
	m.once.Do(func() {
		dsn, err := MySQLDSN(m.url)
		if err != nil {
			m.err = err
			return
		}
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			m.err = err
			return
		}
		m.st, m.err = tmysql.New(ctx, db)
	})
	return m.st, m.err
}

func (m *mysqlSource) read(ctx context.Context, p string) ([]byte, error) {
	st, err := m.storage(ctx)
	if err != nil {
		return nil, err
	}
	return readTiles(ctx, st, p)
}

// tileReader is what the shared log's storage reads.
type tileReader interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
}

// readTiles serves one tlog-tiles path from r. A missing resource is
// fs.ErrNotExist; a tile or bundle stored wider than the partial width
// asked for is cut to it.
func readTiles(ctx context.Context, r tileReader, p string) ([]byte, error) {
	if p == layout.CheckpointPath {
		b, err := r.ReadCheckpoint(ctx)
		return b, notExist(err)
	}
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok || !servable.MatchString(p) {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	level, idx, _ := strings.Cut(rest, "/")
	if level == "entries" {
		i, w, err := layout.ParseTileIndexPartial(idx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		}
		b, err := r.ReadEntryBundle(ctx, i, w)
		if err != nil {
			return nil, notExist(err)
		}
		if w > 0 {
			b = trimResource(b, p, w)
		}
		return b, nil
	}
	l, i, w, err := layout.ParseTileLevelIndexPartial(level, idx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	b, err := r.ReadTile(ctx, l, i, w)
	if err != nil {
		return nil, notExist(err)
	}
	if w > 0 {
		b = trimResource(b, p, w)
	}
	return b, nil
}

func notExist(err error) error {
	if err != nil && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %v", fs.ErrNotExist, err)
	}
	return err
}
