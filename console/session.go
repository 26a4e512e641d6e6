package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/custos-dev/custos/store"
)

// Session cookie and lifetimes.
const (
	SessionCookie = "custos_session"
	// CSRFHeader carries the session's CSRF token on htmx requests; forms carry
	// it in the field CSRFField.
	CSRFHeader = "X-CSRF-Token"
	CSRFField  = "csrf"
	// SessionIdle ends a session nobody used for this long.
	SessionIdle = 30 * time.Minute
	// SessionMax ends every session this long after login.
	SessionMax = 12 * time.Hour
	// MaxSessions bounds the session table; the least recently used goes first.
	MaxSessions = 10000
)

// Session is one logged-in console user.
type Session struct {
	StaffID string
	AdminID string // the admin credential used to log in
	CSRF    string
	Created time.Time
	seen    time.Time
}

// Sessions is the server-side session table. The cookie carries a random
// 256-bit id; only its SHA-256 is kept, so the table cannot be replayed.
// With a store (NewStoreSessions) the table is shared by every replica: a
// session made at one is honoured, and ended, at all of them.
type Sessions struct {
	mu  sync.Mutex
	m   map[[32]byte]*Session
	now func() time.Time
	db  *store.DB
}

// NewSessions returns an empty in-memory table on clock now.
func NewSessions(now func() time.Time) *Sessions {
	return &Sessions{m: map[[32]byte]*Session{}, now: now}
}

var sessionMigrations = []string{
	`CREATE TABLE console_sessions (
		id_hash TEXT PRIMARY KEY, staff_id TEXT NOT NULL, admin_id TEXT NOT NULL, csrf TEXT NOT NULL,
		created_at BIGINT NOT NULL, seen_at BIGINT NOT NULL);
	CREATE INDEX console_sessions_staff ON console_sessions(staff_id)`,
}

// seenEvery is how stale a session's last-use time may get in the store
// before a lookup writes it again (idle expiry is that much coarser).
const seenEvery = 10 * time.Second

// NewStoreSessions returns the session table kept in db.
func NewStoreSessions(ctx context.Context, db *store.DB, now func() time.Time) (*Sessions, error) {
	if err := db.Migrate(ctx, "console", sessionMigrations); err != nil {
		return nil, fmt.Errorf("failed to migrate console sessions: %w", err)
	}
	return &Sessions{now: now, db: db}, nil
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

func dbCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Create starts a session for staffID and returns its id (the cookie value).
func (s *Sessions) Create(staffID, adminID string) (string, *Session, error) {
	id := randomToken()
	now := s.now()
	sess := &Session{StaffID: staffID, AdminID: adminID, CSRF: randomToken(), Created: now, seen: now}
	if s.db != nil {
		ctx, cancel := dbCtx()
		defer cancel()
		// Expired sessions go first, so the table stays bounded.
		if _, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE seen_at < $1 OR created_at < $2`,
			now.Add(-SessionIdle).UnixNano(), now.Add(-SessionMax).UnixNano()); err != nil {
			return "", nil, fmt.Errorf("failed to store the session: %w", err)
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO console_sessions(id_hash, staff_id, admin_id, csrf, created_at, seen_at) VALUES ($1,$2,$3,$4,$5,$6)`,
			hashID(id), staffID, adminID, sess.CSRF, now.UnixNano(), now.UnixNano()); err != nil {
			return "", nil, fmt.Errorf("failed to store the session: %w", err)
		}
		return id, sess, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= MaxSessions {
		s.evictLocked(now)
	}
	s.m[sha256.Sum256([]byte(id))] = sess
	return id, sess, nil
}

// evictLocked drops expired sessions, and the least recently used if none expired.
func (s *Sessions) evictLocked(now time.Time) {
	var oldest [32]byte
	var oldestSeen time.Time
	dropped := false
	for k, v := range s.m {
		if s.expired(v, now) {
			delete(s.m, k)
			dropped = true
			continue
		}
		if oldestSeen.IsZero() || v.seen.Before(oldestSeen) {
			oldest, oldestSeen = k, v.seen
		}
	}
	if !dropped && !oldestSeen.IsZero() {
		delete(s.m, oldest)
	}
}

func (s *Sessions) expired(v *Session, now time.Time) bool {
	return now.Sub(v.seen) > SessionIdle || now.Sub(v.Created) > SessionMax
}

// Lookup returns the live session with id and marks it used.
func (s *Sessions) Lookup(id string) (Session, bool) {
	if id == "" {
		return Session{}, false
	}
	if s.db != nil {
		return s.lookupStore(id)
	}
	k := sha256.Sum256([]byte(id))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		return Session{}, false
	}
	if s.expired(v, now) {
		delete(s.m, k)
		return Session{}, false
	}
	v.seen = now
	return *v, true
}

// lookupStore is Lookup on the shared table; a store that cannot answer
// gives no session (fail closed).
func (s *Sessions) lookupStore(id string) (Session, bool) {
	ctx, cancel := dbCtx()
	defer cancel()
	h := hashID(id)
	var v Session
	var created, seen int64
	err := s.db.QueryRowContext(ctx, `SELECT staff_id, admin_id, csrf, created_at, seen_at FROM console_sessions WHERE id_hash=$1`, h).
		Scan(&v.StaffID, &v.AdminID, &v.CSRF, &created, &seen)
	if err != nil {
		return Session{}, false
	}
	v.Created, v.seen = time.Unix(0, created), time.Unix(0, seen)
	now := s.now()
	if s.expired(&v, now) {
		s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE id_hash=$1`, h)
		return Session{}, false
	}
	if now.Sub(v.seen) >= seenEvery {
		if _, err := s.db.ExecContext(ctx, `UPDATE console_sessions SET seen_at=$2 WHERE id_hash=$1`, h, now.UnixNano()); err != nil {
			return Session{}, false
		}
		v.seen = now
	}
	return v, true
}

// End ends the session with id.
func (s *Sessions) End(id string) {
	if s.db != nil {
		ctx, cancel := dbCtx()
		defer cancel()
		s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE id_hash=$1`, hashID(id))
		return
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// EndFor ends every session of staffID and returns how many it ended.
func (s *Sessions) EndFor(staffID string) int {
	if s.db != nil {
		ctx, cancel := dbCtx()
		defer cancel()
		res, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE staff_id=$1`, staffID)
		if err != nil {
			return 0
		}
		n, _ := res.RowsAffected()
		return int(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.m {
		if v.StaffID == staffID {
			delete(s.m, k)
			n++
		}
	}
	return n
}

// FromRequest returns the session named by r's cookie. For a request that
// changes state (any method but GET, HEAD, OPTIONS) it also requires the
// session's CSRF token in the X-CSRF-Token header or the csrf form field,
// and refuses cross-site requests the browser labelled as such.
func (s *Sessions) FromRequest(r *http.Request) (Session, bool) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil {
		return Session{}, false
	}
	sess, ok := s.Lookup(ck.Value)
	if !ok {
		return Session{}, false
	}
	if !safeMethod(r.Method) && !CheckCSRF(r, sess.CSRF) {
		return Session{}, false
	}
	return sess, true
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// CheckCSRF reports whether r carries want as its CSRF token and was not
// sent from another site.
func CheckCSRF(r *http.Request, want string) bool {
	if want == "" {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		got = r.PostFormValue(CSRFField)
	}
	return len(got) == len(want) && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}
