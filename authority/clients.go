package authority

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/custos-dev/custos/jwks"
	"github.com/custos-dev/custos/store"
)

// Client is a registered caller of the token endpoint (the shop's login service).
// Its secret is shown once at creation; only SHA-256 of it is stored.
type Client struct {
	ID        string     `json:"client_id"`
	Name      string     `json:"name"`
	Audiences []string   `json:"audiences"`
	HeldBy    string     `json:"held_by,omitempty"` // staff id of the custodian of the secret
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	ClientAuth
}

// ClientAuth is how a client may authenticate and what it must prove at the
// standard token endpoint (POST /oauth2/token).
type ClientAuth struct {
	// JWKS is the client's public key set for private_key_jwt (RFC 7523).
	// A client with a key set (or JWKSURI) must authenticate with a signed
	// assertion at /oauth2/token; its secret is refused there.
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// JWKSURI is where the client publishes that key set instead (https, or
	// http on a loopback address).
	JWKSURI string `json:"jwks_uri,omitempty"`
	// RequireDPoP refuses the client a token that is not bound to a DPoP key
	// (RFC 9449 section 5).
	RequireDPoP bool `json:"require_dpop,omitempty"`
}

// Check refuses a key set that is not public EdDSA, ES256 or RS256 keys,
// a jwks_uri that is not https (or http on loopback), and both at once.
func (a ClientAuth) Check() error {
	if len(a.JWKS) > 0 && a.JWKSURI != "" {
		return errors.New("authority: give a client jwks or jwks_uri, not both")
	}
	if len(a.JWKS) > 0 {
		if _, err := parseClientKeys(a.JWKS); err != nil {
			return fmt.Errorf("authority: jwks: %w", err)
		}
	}
	if a.JWKSURI != "" {
		if err := jwks.CheckURL(a.JWKSURI); err != nil {
			return fmt.Errorf("authority: jwks_uri: %w", err)
		}
	}
	return nil
}

// HasKeys reports whether the client authenticates with private_key_jwt.
func (a ClientAuth) HasKeys() bool { return len(a.JWKS) > 0 || a.JWKSURI != "" }

// Admin is an admin credential bound to a staff identity.
type Admin struct {
	ID        string     `json:"id"`
	StaffID   string     `json:"staff_id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Sentinel errors of the credential registry.
var (
	ErrBadCredential = errors.New("authority: unknown or revoked credential")
	ErrBadName       = errors.New("authority: name must be 1-64 characters of [A-Za-z0-9._-]")
	ErrNotFound      = errors.New("authority: no such credential")
	// ErrLastAdmin refuses a change that would leave no living admin credential.
	ErrLastAdmin = errors.New("authority: refused: it would leave custos without a living admin credential")
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var credentialMigrations = []string{
	`CREATE TABLE authority_clients (
		id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, audiences TEXT NOT NULL,
		secret_hash TEXT NOT NULL UNIQUE, held_by TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL, revoked_at BIGINT);
	CREATE TABLE authority_admins (
		id TEXT PRIMARY KEY, staff_id TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
		created_at BIGINT NOT NULL, revoked_at BIGINT)`,
	// Credentials of every role; admin credentials move here.
	`CREATE TABLE authority_credentials (
		id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
		person TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '',
		token_hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL, created_by TEXT NOT NULL DEFAULT '',
		revoked_at BIGINT, revoked_by TEXT NOT NULL DEFAULT '', revoke_reason TEXT NOT NULL DEFAULT '');
	CREATE UNIQUE INDEX authority_credentials_live_name ON authority_credentials(name) WHERE revoked_at IS NULL;
	CREATE INDEX authority_credentials_person ON authority_credentials(person);
	INSERT INTO authority_credentials(id, name, role, person, token_hash, created_at, created_by, revoked_at)
		SELECT id, 'admin-' || id, 'admin', staff_id, token_hash, created_at, 'custos/migration', revoked_at FROM authority_admins`,
}

// CacheTTL bounds how long a positive lookup of a client secret or a
// credential is served from memory. Every replica reads the shared store, so
// a revocation made at any replica is refused everywhere within CacheTTL
// (the contract is 1 s).
const CacheTTL = 500 * time.Millisecond

// Credentials is the registry of client secrets and of the control plane's
// credentials, kept in the shared store. Lookups are answered from the store,
// or from a positive cache entry younger than CacheTTL.
type Credentials struct {
	db  *store.DB
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cached // by secret hash
	seen  *seenStore
}

type cached struct {
	at     time.Time // monotonic wall clock of the lookup
	client *Client
	cred   *Credential
}

// OpenCredentials migrates the tables.
func OpenCredentials(ctx context.Context, db *store.DB, now func() time.Time) (*Credentials, error) {
	if err := db.Migrate(ctx, "authority", credentialMigrations); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, "authority_oauth", oauthMigrations); err != nil {
		return nil, err
	}
	return &Credentials{db: db, now: now, cache: map[string]cached{}, seen: &seenStore{db: db, now: now}}, nil
}

// secret returns a fresh 256-bit secret with a readable prefix, and its hash.
func secret(prefix string) (string, string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	s := prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return s, hashSecret(s)
}

// hashSecret is SHA-256: the secrets are 256-bit random, so a slow KDF adds nothing.
func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// fromCache returns the entry for h if it is younger than CacheTTL.
func (c *Credentials) fromCache(h string) (cached, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cache[h]
	if !ok {
		return cached{}, false
	}
	if time.Since(e.at) >= CacheTTL {
		delete(c.cache, h)
		return cached{}, false
	}
	return e, true
}

func (c *Credentials) remember(h string, e cached) {
	e.at = time.Now()
	c.mu.Lock()
	if len(c.cache) > 1<<16 {
		clear(c.cache)
	}
	c.cache[h] = e
	c.mu.Unlock()
}

// forget drops every cached lookup, after a local revocation.
func (c *Credentials) forget() {
	c.mu.Lock()
	clear(c.cache)
	c.mu.Unlock()
}

// AddClient registers a client for audiences and returns it with its secret,
// which is not kept anywhere.
func (c *Credentials) AddClient(ctx context.Context, name string, audiences []string, heldBy string) (Client, string, error) {
	if !nameRE.MatchString(name) {
		return Client{}, "", ErrBadName
	}
	if len(audiences) == 0 {
		return Client{}, "", errors.New("authority: a client needs at least one audience")
	}
	for _, a := range audiences {
		if a == "" || len(a) > 256 || !printable(a) {
			return Client{}, "", fmt.Errorf("authority: bad audience %q", a)
		}
	}
	sec, h := secret("cs_")
	cl := Client{ID: newID("cl_"), Name: name, Audiences: audiences, HeldBy: heldBy, CreatedAt: c.now().UTC().Truncate(time.Second)}
	auds, _ := json.Marshal(audiences)
	if _, err := c.db.ExecContext(ctx, `INSERT INTO authority_clients(id,name,audiences,secret_hash,held_by,created_at) VALUES ($1,$2,$3,$4,$5,$6)`,
		cl.ID, name, string(auds), h, heldBy, cl.CreatedAt.Unix()); err != nil {
		return Client{}, "", fmt.Errorf("failed to add client %s: %w", name, err)
	}
	return cl, sec, nil
}

const clientCols = `id, name, audiences, held_by, created_at, revoked_at, jwks, jwks_uri, require_dpop`

func scanClient(sc interface{ Scan(...any) error }, extra ...any) (*Client, error) {
	var cl Client
	var auds, jwks string
	var created, dpop int64
	var revoked sql.NullInt64
	if err := sc.Scan(append([]any{&cl.ID, &cl.Name, &auds, &cl.HeldBy, &created, &revoked, &jwks, &cl.JWKSURI, &dpop}, extra...)...); err != nil {
		return nil, err
	}
	if jwks != "" {
		cl.JWKS = json.RawMessage(jwks)
	}
	cl.RequireDPoP = dpop != 0
	if err := json.Unmarshal([]byte(auds), &cl.Audiences); err != nil {
		return nil, fmt.Errorf("failed to read client %s: %w", cl.ID, err)
	}
	cl.CreatedAt = time.Unix(created, 0).UTC()
	if revoked.Valid {
		t := time.Unix(revoked.Int64, 0).UTC()
		cl.RevokedAt = &t
	}
	return &cl, nil
}

// Client authenticates a client secret against the shared store. A store
// that cannot answer refuses (fail closed).
func (c *Credentials) Client(secret string) (*Client, error) {
	if secret == "" {
		return nil, ErrBadCredential
	}
	h := hashSecret(secret)
	if e, ok := c.fromCache(h); ok && e.client != nil {
		return e.client, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := scanClient(c.db.QueryRowContext(ctx, `SELECT `+clientCols+` FROM authority_clients WHERE secret_hash=$1 AND revoked_at IS NULL`, h))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrBadCredential
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the store did not answer: %v", ErrBadCredential, err)
	}
	c.remember(h, cached{client: cl})
	return cl, nil
}

// ClientSecret authenticates a client by its id and secret together
// (client_secret_basic and client_secret_post): the secret must be the one
// registered for that id, compared in constant time. A store that cannot
// answer refuses (fail closed).
func (c *Credentials) ClientSecret(ctx context.Context, id, secret string) (*Client, error) {
	if id == "" || secret == "" {
		return nil, ErrBadCredential
	}
	h := hashSecret(secret)
	key := "id\x00" + id + "\x00" + h
	if e, ok := c.fromCache(key); ok && e.client != nil {
		return e.client, nil
	}
	var stored string
	cl, err := c.clientByID(ctx, id, &stored)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(stored), []byte(h)) != 1 {
		return nil, ErrBadCredential
	}
	c.remember(key, cached{client: cl})
	return cl, nil
}

// ClientByID returns the live client id names (private_key_jwt: the
// assertion is checked against its keys afterwards).
func (c *Credentials) ClientByID(ctx context.Context, id string) (*Client, error) {
	if id == "" {
		return nil, ErrBadCredential
	}
	key := "id\x00" + id
	if e, ok := c.fromCache(key); ok && e.client != nil {
		return e.client, nil
	}
	var stored string
	cl, err := c.clientByID(ctx, id, &stored)
	if err != nil {
		return nil, err
	}
	c.remember(key, cached{client: cl})
	return cl, nil
}

func (c *Credentials) clientByID(ctx context.Context, id string, secretHash *string) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cl, err := scanClient(c.db.QueryRowContext(ctx, `SELECT `+clientCols+`, secret_hash FROM authority_clients WHERE id=$1 AND revoked_at IS NULL`, id), secretHash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrBadCredential
	}
	if err != nil {
		// Not ErrBadCredential: the token endpoint answers 503, not 401.
		return nil, fmt.Errorf("failed to read client %s: the store did not answer: %w", id, err)
	}
	return cl, nil
}

// SetClientAuth replaces how client id authenticates at /oauth2/token and
// whether it must bind its tokens to a DPoP key. A key set is checked here:
// public keys of EdDSA, ES256 or RS256 only.
func (c *Credentials) SetClientAuth(ctx context.Context, id string, a ClientAuth) error {
	if err := a.Check(); err != nil {
		return err
	}
	dpop := 0
	if a.RequireDPoP {
		dpop = 1
	}
	res, err := c.db.ExecContext(ctx, `UPDATE authority_clients SET jwks=$1, jwks_uri=$2, require_dpop=$3 WHERE id=$4 AND revoked_at IS NULL`,
		string(a.JWKS), a.JWKSURI, dpop, id)
	if err != nil {
		return fmt.Errorf("failed to update client %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	c.forget()
	return nil
}

// ListClients lists every client, revoked ones included, oldest first.
func (c *Credentials) ListClients(ctx context.Context) ([]Client, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+clientCols+` FROM authority_clients ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("failed to list clients: %w", err)
	}
	defer rows.Close()
	out := []Client{}
	for rows.Next() {
		cl, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *cl)
	}
	return out, rows.Err()
}

// Clients lists live clients (nil when the store cannot answer).
func (c *Credentials) Clients() []Client {
	all, err := c.ListClients(context.Background())
	if err != nil {
		return nil
	}
	out := make([]Client, 0, len(all))
	for _, cl := range all {
		if cl.RevokedAt == nil {
			out = append(out, cl)
		}
	}
	return out
}

// AddAdmin makes an admin credential for staffID and returns its token once.
func (c *Credentials) AddAdmin(ctx context.Context, staffID string) (Admin, string, error) {
	if staffID == "" {
		return Admin{}, "", errors.New("authority: an admin credential needs a staff identity")
	}
	cr, tok, err := c.Add(ctx, NewCredential{Name: "admin-" + newID(""), Role: RoleAdmin, Person: staffID}, "custos")
	if err != nil {
		return Admin{}, "", err
	}
	return Admin{ID: cr.ID, StaffID: staffID, CreatedAt: cr.CreatedAt}, tok, nil
}

// Admin authenticates an admin token: a live credential of role admin.
func (c *Credentials) Admin(token string) (*Admin, error) {
	cr, err := c.Authenticate(context.Background(), token)
	if err != nil {
		return nil, ErrBadCredential
	}
	if cr.Role != RoleAdmin {
		return nil, ErrBadCredential
	}
	return &Admin{ID: cr.ID, StaffID: cr.Actor(), CreatedAt: cr.CreatedAt}, nil
}

// RevokeHeldBy revokes every client secret held by, and every credential
// bound to, staffID. It is what offboarding calls.
func (c *Credentials) RevokeHeldBy(ctx context.Context, staffID, actor, reason string) (int, error) {
	if staffID == "" {
		return 0, nil
	}
	now := c.now().Unix()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	r1, err := tx.ExecContext(ctx, `UPDATE authority_clients SET revoked_at=$1 WHERE held_by=$2 AND revoked_at IS NULL`, now, staffID)
	if err != nil {
		return 0, fmt.Errorf("failed to revoke clients of %s: %w", staffID, err)
	}
	r2, err := tx.ExecContext(ctx, `UPDATE authority_credentials SET revoked_at=$1, revoked_by=$3, revoke_reason=$4 WHERE person=$2 AND revoked_at IS NULL`,
		now, staffID, actor, reason)
	if err != nil {
		return 0, fmt.Errorf("failed to revoke credentials of %s: %w", staffID, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	c.forget()
	n1, _ := r1.RowsAffected()
	n2, _ := r2.RowsAffected()
	return int(n1 + n2), nil
}

// printable reports whether s is valid UTF-8 with no control characters.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

// RevokeClientSecret revokes one client's secret (offboarding calls it for
// client secrets the departed person was custodian of).
func (c *Credentials) RevokeClientSecret(ctx context.Context, clientID, actor, reason string) error {
	if _, err := c.db.ExecContext(ctx, `UPDATE authority_clients SET revoked_at=$1 WHERE id=$2 AND revoked_at IS NULL`, c.now().Unix(), clientID); err != nil {
		return fmt.Errorf("failed to revoke client %s: %w", clientID, err)
	}
	c.forget()
	return nil
}
