package authority

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

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
}

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
}

// Credentials is the registry of client secrets and admin credentials. Lookups
// are served from memory; every change is written to the store first.
type Credentials struct {
	db  *store.DB
	now func() time.Time

	mu      sync.RWMutex
	clients map[string]*Client // by secret hash
	admins  map[string]*Admin  // by token hash
}

// OpenCredentials migrates the tables and loads the live credentials.
func OpenCredentials(ctx context.Context, db *store.DB, now func() time.Time) (*Credentials, error) {
	if err := db.Migrate(ctx, "authority", credentialMigrations); err != nil {
		return nil, err
	}
	c := &Credentials{db: db, now: now, clients: map[string]*Client{}, admins: map[string]*Admin{}}
	rows, err := db.QueryContext(ctx, `SELECT id, name, audiences, secret_hash, held_by, created_at FROM authority_clients WHERE revoked_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("failed to load clients: %w", err)
	}
	for rows.Next() {
		var cl Client
		var auds, h string
		var created int64
		if err := rows.Scan(&cl.ID, &cl.Name, &auds, &h, &cl.HeldBy, &created); err != nil {
			rows.Close()
			return nil, err
		}
		if err := json.Unmarshal([]byte(auds), &cl.Audiences); err != nil {
			rows.Close()
			return nil, fmt.Errorf("failed to load client %s: %w", cl.ID, err)
		}
		cl.CreatedAt = time.Unix(created, 0).UTC()
		c.clients[h] = &cl
	}
	rows.Close()
	rows, err = db.QueryContext(ctx, `SELECT id, staff_id, token_hash, created_at FROM authority_admins WHERE revoked_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("failed to load admin credentials: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a Admin
		var h string
		var created int64
		if err := rows.Scan(&a.ID, &a.StaffID, &h, &created); err != nil {
			return nil, err
		}
		a.CreatedAt = time.Unix(created, 0).UTC()
		c.admins[h] = &a
	}
	return c, rows.Err()
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
	c.mu.Lock()
	c.clients[h] = &cl
	c.mu.Unlock()
	return cl, sec, nil
}

// Client authenticates a client secret.
func (c *Credentials) Client(secret string) (*Client, error) {
	c.mu.RLock()
	cl := c.clients[hashSecret(secret)]
	c.mu.RUnlock()
	if cl == nil {
		return nil, ErrBadCredential
	}
	return cl, nil
}

// Clients lists live clients.
func (c *Credentials) Clients() []Client {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Client, 0, len(c.clients))
	for _, cl := range c.clients {
		out = append(out, *cl)
	}
	return out
}

// AddAdmin makes an admin credential for staffID and returns its token once.
func (c *Credentials) AddAdmin(ctx context.Context, staffID string) (Admin, string, error) {
	if staffID == "" {
		return Admin{}, "", errors.New("authority: an admin credential needs a staff identity")
	}
	tok, h := secret("ca_")
	a := Admin{ID: newID("ad_"), StaffID: staffID, CreatedAt: c.now().UTC().Truncate(time.Second)}
	if _, err := c.db.ExecContext(ctx, `INSERT INTO authority_admins(id,staff_id,token_hash,created_at) VALUES ($1,$2,$3,$4)`,
		a.ID, staffID, h, a.CreatedAt.Unix()); err != nil {
		return Admin{}, "", fmt.Errorf("failed to add admin credential: %w", err)
	}
	c.mu.Lock()
	c.admins[h] = &a
	c.mu.Unlock()
	return a, tok, nil
}

// Admin authenticates an admin token.
func (c *Credentials) Admin(token string) (*Admin, error) {
	c.mu.RLock()
	a := c.admins[hashSecret(token)]
	c.mu.RUnlock()
	if a == nil {
		return nil, ErrBadCredential
	}
	return a, nil
}

// RevokeHeldBy revokes every client secret held by, and every admin credential
// of, staffID. It is what offboarding calls.
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
	r2, err := tx.ExecContext(ctx, `UPDATE authority_admins SET revoked_at=$1 WHERE staff_id=$2 AND revoked_at IS NULL`, now, staffID)
	if err != nil {
		return 0, fmt.Errorf("failed to revoke admin credentials of %s: %w", staffID, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	n1, _ := r1.RowsAffected()
	n2, _ := r2.RowsAffected()
	c.mu.Lock()
	for h, cl := range c.clients {
		if cl.HeldBy == staffID {
			delete(c.clients, h)
		}
	}
	for h, a := range c.admins {
		if a.StaffID == staffID {
			delete(c.admins, h)
		}
	}
	c.mu.Unlock()
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
	c.mu.Lock()
	for h, cl := range c.clients {
		if cl.ID == clientID {
			delete(c.clients, h)
		}
	}
	c.mu.Unlock()
	return nil
}
