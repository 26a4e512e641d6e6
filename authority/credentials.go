package authority

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what a control-plane credential may do.
type Role string

// Roles of control-plane credentials. Which endpoints each may call is
// decided where the endpoints are mounted (server.routes).
const (
	// RoleAdmin may call every admin endpoint.
	RoleAdmin Role = "admin"
	// RoleGateway may follow the ledger and keys and post access events.
	RoleGateway Role = "gateway"
	// RoleDetector may follow the ledger and keys, post access events and
	// read alerts and incidents.
	RoleDetector Role = "detector"
	// RoleSCIM may call /scim/v2, on the identities its provider provisioned.
	RoleSCIM Role = "scim"
	// RoleIssuer may record, in the ledger, the tokens of the one identity
	// provider it is bound to (its Provider), and call nothing else.
	RoleIssuer Role = "issuer"
)

// ParseRole returns the role named s (exact, lower case), or an error.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleGateway, RoleDetector, RoleSCIM, RoleIssuer:
		return r, nil
	}
	return "", fmt.Errorf("authority: unknown role %q (admin, gateway, detector, scim or issuer)", s)
}

// Credential is one identity of the control plane: a bearer token with a
// role. Only the SHA-256 of its token is stored.
type Credential struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Person is the staff id the credential is bound to; it is revoked when
	// that person departs.
	Person string `json:"person,omitempty"`
	// Provider names the identity provider of a scim credential (it
	// manages the identities provisioned under that name, and only those)
	// or of an issuer credential (it records that provider's tokens).
	Provider     string     `json:"provider,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	CreatedBy    string     `json:"created_by,omitempty"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokedBy    string     `json:"revoked_by,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
}

// Actor is who the credential's actions are attributed to: its person, or
// "credential:NAME" for one bound to nobody.
func (c Credential) Actor() string {
	if c.Person != "" {
		return c.Person
	}
	return "credential:" + c.Name
}

// NewCredential is what Add needs.
type NewCredential struct {
	Name     string
	Role     Role
	Person   string
	Provider string
}

// ErrRevoked is returned with the credential when a revoked token is
// presented, so the caller can tell a departed person's use apart.
var ErrRevoked = fmt.Errorf("%w: revoked", ErrBadCredential)

const credCols = `id, name, role, person, provider, created_at, created_by, revoked_at, revoked_by, revoke_reason`

func scanCredential(sc interface{ Scan(...any) error }) (*Credential, error) {
	var cr Credential
	var role string
	var created int64
	var revoked sql.NullInt64
	if err := sc.Scan(&cr.ID, &cr.Name, &role, &cr.Person, &cr.Provider, &created, &cr.CreatedBy, &revoked, &cr.RevokedBy, &cr.RevokeReason); err != nil {
		return nil, err
	}
	cr.Role = Role(role)
	cr.CreatedAt = time.Unix(created, 0).UTC()
	if revoked.Valid {
		t := time.Unix(revoked.Int64, 0).UTC()
		cr.RevokedAt = &t
	}
	return &cr, nil
}

// Add makes a credential and returns it with its token, shown this once.
func (c *Credentials) Add(ctx context.Context, n NewCredential, actor string) (Credential, string, error) {
	if !nameRE.MatchString(n.Name) {
		return Credential{}, "", ErrBadName
	}
	if _, err := ParseRole(string(n.Role)); err != nil {
		return Credential{}, "", err
	}
	if n.Person != "" && (len(n.Person) > 128 || !printable(n.Person) || strings.TrimSpace(n.Person) != n.Person) {
		return Credential{}, "", fmt.Errorf("authority: bad person %q", n.Person)
	}
	if n.Role == RoleSCIM {
		if n.Provider == "" {
			n.Provider = n.Name
		}
		if !nameRE.MatchString(n.Provider) {
			return Credential{}, "", fmt.Errorf("authority: provider: %w", ErrBadName)
		}
	} else if n.Role == RoleIssuer {
		if !nameRE.MatchString(n.Provider) {
			return Credential{}, "", errors.New("authority: an issuer credential names its provider (--provider NAME)")
		}
	} else if n.Provider != "" {
		return Credential{}, "", errors.New("authority: only a scim or issuer credential has a provider")
	}
	prefix := map[Role]string{RoleAdmin: "ca_", RoleGateway: "cg_", RoleDetector: "cd_", RoleSCIM: "cscim_", RoleIssuer: "ciss_"}[n.Role]
	tok, h := secret(prefix)
	cr := Credential{ID: newID("cr_"), Name: n.Name, Role: n.Role, Person: n.Person, Provider: n.Provider,
		CreatedAt: c.now().UTC().Truncate(time.Second), CreatedBy: actor}
	if _, err := c.db.ExecContext(ctx, `INSERT INTO authority_credentials(id,name,role,person,provider,token_hash,created_at,created_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		cr.ID, cr.Name, string(cr.Role), cr.Person, cr.Provider, h, cr.CreatedAt.Unix(), actor); err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unique") {
			return Credential{}, "", fmt.Errorf("authority: a live credential named %q exists", n.Name)
		}
		return Credential{}, "", fmt.Errorf("failed to add credential %s: %w", n.Name, err)
	}
	return cr, tok, nil
}

// Authenticate returns the live credential whose token is tok. For a revoked
// one it returns the credential and ErrRevoked; for an unknown one, or when
// the store cannot answer, ErrBadCredential.
func (c *Credentials) Authenticate(ctx context.Context, tok string) (Credential, error) {
	if tok == "" {
		return Credential{}, ErrBadCredential
	}
	h := hashSecret(tok)
	if e, ok := c.fromCache(h); ok && e.cred != nil {
		return *e.cred, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cr, err := scanCredential(c.db.QueryRowContext(ctx, `SELECT `+credCols+` FROM authority_credentials WHERE token_hash=$1`, h))
	if errors.Is(err, sql.ErrNoRows) {
		return Credential{}, ErrBadCredential
	}
	if err != nil {
		return Credential{}, fmt.Errorf("%w: the store did not answer: %v", ErrBadCredential, err)
	}
	if cr.RevokedAt != nil {
		return *cr, ErrRevoked
	}
	c.remember(h, cached{cred: cr})
	return *cr, nil
}

// Get returns the credential with id (any letter case of it).
func (c *Credentials) Get(ctx context.Context, id string) (Credential, error) {
	cr, err := scanCredential(c.db.QueryRowContext(ctx, `SELECT `+credCols+` FROM authority_credentials WHERE id=$1`, strings.ToLower(id)))
	if errors.Is(err, sql.ErrNoRows) {
		return Credential{}, ErrNotFound
	}
	if err != nil {
		return Credential{}, fmt.Errorf("failed to read credential: %w", err)
	}
	return *cr, nil
}

// List returns every credential, revoked ones included, oldest first.
func (c *Credentials) List(ctx context.Context) ([]Credential, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+credCols+` FROM authority_credentials ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("failed to list credentials: %w", err)
	}
	defer rows.Close()
	out := []Credential{}
	for rows.Next() {
		cr, err := scanCredential(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *cr)
	}
	return out, rows.Err()
}

// lockAdmins takes, inside tx, the rows of the live admin credentials, so
// that two concurrent revocations cannot both leave the other one last.
// (SQLite serialises writers; the first write of tx takes its lock.)
func (c *Credentials) lockAdmins(ctx context.Context, tx *sql.Tx) error {
	if c.db.Dialect != "postgres" {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT id FROM authority_credentials WHERE role='admin' AND revoked_at IS NULL FOR UPDATE`)
	if err != nil {
		return fmt.Errorf("failed to lock admin credentials: %w", err)
	}
	return rows.Close()
}

func liveAdminsExcept(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, person string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM authority_credentials WHERE role='admin' AND revoked_at IS NULL AND ($1 = '' OR person <> $1)`, person).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("failed to count admin credentials: %w", err)
	}
	return n, nil
}

// Revoke revokes the credential with id (any letter case). It refuses with
// ErrLastAdmin to revoke the last live admin credential, and ErrNotFound for
// an unknown or already revoked one.
func (c *Credentials) Revoke(ctx context.Context, id, actor, reason string) (Credential, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return Credential{}, err
	}
	defer tx.Rollback()
	if err := c.lockAdmins(ctx, tx); err != nil {
		return Credential{}, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE authority_credentials SET revoked_at=$2, revoked_by=$3, revoke_reason=$4 WHERE id=$1 AND revoked_at IS NULL`,
		id, c.now().Unix(), actor, reason)
	if err != nil {
		return Credential{}, fmt.Errorf("failed to revoke credential %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Credential{}, ErrNotFound
	}
	cr, err := scanCredential(tx.QueryRowContext(ctx, `SELECT `+credCols+` FROM authority_credentials WHERE id=$1`, id))
	if err != nil {
		return Credential{}, fmt.Errorf("failed to read credential %s: %w", id, err)
	}
	if cr.Role == RoleAdmin {
		n, err := liveAdminsExcept(ctx, tx, "")
		if err != nil {
			return Credential{}, err
		}
		if n == 0 {
			return Credential{}, ErrLastAdmin
		}
	}
	if err := tx.Commit(); err != nil {
		return Credential{}, fmt.Errorf("failed to revoke credential %s: %w", id, err)
	}
	c.forget()
	return *cr, nil
}

// CheckDeparture refuses with ErrLastAdmin when the departure of staffID,
// which revokes every credential bound to them, would leave no live admin
// credential.
func (c *Credentials) CheckDeparture(ctx context.Context, staffID string) error {
	if staffID == "" {
		return nil
	}
	var mine int
	if err := c.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM authority_credentials WHERE role='admin' AND revoked_at IS NULL AND person=$1`, staffID).Scan(&mine); err != nil {
		return fmt.Errorf("failed to count admin credentials: %w", err)
	}
	if mine == 0 {
		return nil
	}
	n, err := liveAdminsExcept(ctx, c.db, staffID)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w (%s holds the last ones; add another admin credential first)", ErrLastAdmin, staffID)
	}
	return nil
}

// ImportSCIM records, as a scim credential of provider name, a token made
// before credentials had roles, known by the SHA-256 (hex) of its token. A
// hash already recorded is left as it is; it reports whether it added one.
func (c *Credentials) ImportSCIM(ctx context.Context, name, tokenHash, createdBy string, created time.Time, revoked *time.Time) (bool, error) {
	if len(tokenHash) != 64 {
		return false, fmt.Errorf("authority: bad token hash for %q", name)
	}
	cname := "legacy-" + name
	if !nameRE.MatchString(cname) {
		cname = "legacy-" + newID("")
	}
	var rev any
	if revoked != nil {
		rev = revoked.Unix()
	}
	res, err := c.db.ExecContext(ctx, `INSERT INTO authority_credentials(id,name,role,person,provider,token_hash,created_at,created_by,revoked_at)
		SELECT $1,$2,'scim','',$3,$4,$5,$6,$7 WHERE NOT EXISTS (SELECT 1 FROM authority_credentials WHERE token_hash=$4)`,
		newID("cr_"), cname, name, tokenHash, created.Unix(), createdBy, rev)
	if err != nil {
		return false, fmt.Errorf("failed to import SCIM token %q: %w", name, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// LiveAdmins counts the live admin credentials.
func (c *Credentials) LiveAdmins(ctx context.Context) (int, error) {
	return liveAdminsExcept(ctx, c.db, "")
}
