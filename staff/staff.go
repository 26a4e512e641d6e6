// Package staff is the workforce directory: people and service accounts, their
// groups, roles and contract dates, and which of them are custodians of which
// signing keys and client secrets.
//
// It also runs offboarding. A person departs when the identity provider
// deactivates or deletes them over SCIM 2.0 (RFC 7643/7644, see [Directory.SCIMHandler]),
// when an administrator says so ([Directory.Depart]) or when their end date
// passes ([Directory.Sweep], run every minute by [Directory.Run]). Within one
// sweep of departure every key they ever had access to is rotated and the old
// key revoked (or, under [PolicyGrace], left to verify until the longest token
// it signed has expired and revoked then), the credentials they held are
// revoked, and an alert is raised. Every change is attributed to an actor and
// appended to the staff_changes table.
//
// Each identity and group remembers the identity provider that provisioned
// it over SCIM; a SCIM caller reads, lists and changes only its provider's
// (ErrForbidden otherwise), and a [DepartureGuard] may refuse a departure
// that would leave custos without an admin credential.
package staff

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/store"
)

// Kind is what sort of identity a directory entry is.
type Kind string

const (
	Employee   Kind = "employee"
	Contractor Kind = "contractor"
	Vendor     Kind = "vendor"
	Service    Kind = "service" // a service account, not a person
)

// Status is whether an identity may still act.
type Status string

const (
	Active   Status = "active"
	Departed Status = "departed"
)

// ResourceKind names what a custodian looks after.
type ResourceKind string

const (
	SigningKey   ResourceKind = "key"    // a signing key, by kid
	ClientSecret ResourceKind = "client" // a registered client's secret, by client id
)

// Role is how a custodian relates to a resource.
type Role string

const (
	Operate    Role = "operate"    // may use it (sign, deploy the secret)
	Administer Role = "administer" // may rotate, revoke, grant
	Accessed   Role = "accessed"   // is known to have had access to it at some time
)

// AnyID in a GroupRule matches every resource of the rule's kind.
const AnyID = "*"

// KeyAdminsGroup is the group whose members are, by default, custodians of
// every signing key.
const KeyAdminsGroup = "auth-key-admins"

// OffboardingPolicy says what happens to a departed custodian's old key.
type OffboardingPolicy string

const (
	// PolicyRevoke revokes the old key in the same sweep that rotates it.
	PolicyRevoke OffboardingPolicy = "revoke"
	// PolicyGrace leaves the old key verify-only until MaxTokenTTL after
	// departure, so tokens it signed before then run out, and revokes it then.
	PolicyGrace OffboardingPolicy = "grace"
)

// Defaults for Config.
const (
	DefaultSweepInterval = time.Minute
	DefaultMaxTokenTTL   = 15 * time.Minute
	// MaxBodyBytes bounds a SCIM request body.
	MaxBodyBytes = 1 << 20
	// OffboardingActor attributes the changes offboarding makes.
	OffboardingActor = "system:offboarding"
)

// Alert rules raised through Alerter.
const (
	RuleStaffDeparted         = "staff_departed"
	RuleOffboardingFailed     = "offboarding_failed"
	RuleDepartedCredentialUse = "departed_credential_use"
	// RuleNoAdminCredential: an end-date departure revoked the last admin
	// credential (the one departure Guard cannot refuse).
	RuleNoAdminCredential = "no_admin_credential"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound     = errors.New("staff: no such identity")
	ErrDeparted     = errors.New("staff: identity has departed")
	ErrUniqueness   = errors.New("staff: name already in use")
	ErrInvalid      = errors.New("staff: invalid value")
	ErrNoKeyOps     = errors.New("staff: no key operations configured")
	ErrUnauthorized = errors.New("staff: bad or missing SCIM token")
	// ErrForbidden refuses a SCIM caller an identity or group its identity
	// provider did not provision, or a credential that is not a SCIM one.
	ErrForbidden = errors.New("staff: not provisioned by this identity provider")
	// ErrLastAdmin refuses a departure that would leave no admin credential.
	ErrLastAdmin = errors.New("staff: refused: it would leave custos without a living admin credential")
)

// KeyOps are the key operations offboarding needs; keys.Manager provides them.
type KeyOps interface {
	Rotate(ctx context.Context, actor, reason string) (keys.Key, error)
	Revoke(ctx context.Context, kid, actor, reason string) error
	List(ctx context.Context) ([]keys.Key, error)
}

// CredentialRevoker revokes every credential (client secret, admin token) that
// is bound to a staff identity, returning how many it revoked.
type CredentialRevoker interface {
	RevokeHeldBy(ctx context.Context, staffID, actor, reason string) (int, error)
}

// ClientRevoker revokes one client's secret. Offboarding calls it for each
// client secret the departed person was a custodian of.
type ClientRevoker interface {
	RevokeClientSecret(ctx context.Context, clientID, actor, reason string) error
}

// SCIMAuthenticator resolves the bearer token of a SCIM request to the name
// of its identity provider. It returns ErrUnauthorized for an unknown or
// revoked token and ErrForbidden for a live credential that is not a SCIM one.
type SCIMAuthenticator interface {
	SCIMProvider(ctx context.Context, token string) (string, error)
}

// DepartureGuard is asked before an identity departs (other than by the
// end-date sweep); an error refuses the departure.
type DepartureGuard interface {
	CheckDeparture(ctx context.Context, staffID string) error
}

// adminCounter is the optional capability of a DepartureGuard to count the
// live admin credentials left after an offboarding.
type adminCounter interface {
	LiveAdmins(ctx context.Context) (int, error)
}

// Alerter raises a security alert. Severity is "low", "medium", "high" or
// "critical".
type Alerter interface {
	Raise(ctx context.Context, rule, severity, entity, summary string)
}

// GroupRule makes every current member of Group a custodian of the resources
// of Kind named ID (AnyID for all of them) in Role.
type GroupRule struct {
	Group string       `json:"group" yaml:"group"`
	Kind  ResourceKind `json:"kind" yaml:"kind"`
	ID    string       `json:"id" yaml:"id"`
	Role  Role         `json:"role" yaml:"role"`
}

// DefaultGroupRules makes members of KeyAdminsGroup administrators of every
// signing key.
var DefaultGroupRules = []GroupRule{{Group: KeyAdminsGroup, Kind: SigningKey, ID: AnyID, Role: Administer}}

// Config wires a Directory. Zero fields take the documented defaults.
type Config struct {
	// Keys rotates and revokes keys on offboarding. Without it offboarding
	// fails (and is retried by every sweep) rather than silently skipping keys.
	Keys KeyOps
	// Credentials revoke what departed staff held; each is called in turn.
	Credentials []CredentialRevoker
	// Clients, if set, revokes the secrets of clients the person was custodian of.
	Clients ClientRevoker
	// SCIMAuth, if set, authenticates every SCIM request; tokens made with
	// AddSCIMToken then count only if SCIMAuth knows them (SCIMTokens lists
	// them for import).
	SCIMAuth SCIMAuthenticator
	// Guard, if set, may refuse a departure (the last admin's).
	Guard DepartureGuard
	// Alerts receives departures, failures and use of departed credentials.
	Alerts Alerter
	// Policy for the old key: PolicyRevoke (default) or PolicyGrace.
	Policy OffboardingPolicy
	// MaxTokenTTL is the longest lifetime of a token; PolicyGrace revokes the
	// old key this long after departure. Default DefaultMaxTokenTTL.
	MaxTokenTTL time.Duration
	// GroupRules derive custodianship from group membership; nil means
	// DefaultGroupRules, an empty non-nil slice means none.
	GroupRules []GroupRule
	// SweepInterval is how often Run sweeps. Default DefaultSweepInterval.
	SweepInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Log receives operational messages. Default slog.Default().
	Log *slog.Logger
}

// Directory is the staff directory in the control-plane store.
type Directory struct {
	offMu sync.Mutex
	db    *store.DB
	cfg   Config
	now   func() time.Time
	log   *slog.Logger
}

var migrations = []string{
	`CREATE TABLE staff_people (
		id TEXT PRIMARY KEY,
		user_name TEXT NOT NULL,
		user_name_key TEXT NOT NULL,
		external_id TEXT NOT NULL DEFAULT '',
		display_name TEXT NOT NULL DEFAULT '',
		kind TEXT NOT NULL,
		status TEXT NOT NULL,
		active INTEGER NOT NULL,
		deleted INTEGER NOT NULL DEFAULT 0,
		start_at BIGINT,
		end_at BIGINT,
		departed_at BIGINT,
		departure_reason TEXT NOT NULL DEFAULT '',
		attrs TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		modified_at BIGINT NOT NULL
	);
	CREATE UNIQUE INDEX staff_people_user_name ON staff_people(user_name_key) WHERE deleted = 0;
	CREATE INDEX staff_people_end ON staff_people(end_at);
	CREATE TABLE staff_groups (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL,
		name_key TEXT NOT NULL,
		external_id TEXT NOT NULL DEFAULT '',
		deleted INTEGER NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		modified_at BIGINT NOT NULL
	);
	CREATE UNIQUE INDEX staff_groups_name ON staff_groups(name_key) WHERE deleted = 0;
	CREATE TABLE staff_memberships (
		group_id TEXT NOT NULL,
		staff_id TEXT NOT NULL,
		joined_at BIGINT NOT NULL,
		left_at BIGINT
	);
	CREATE INDEX staff_memberships_group ON staff_memberships(group_id);
	CREATE INDEX staff_memberships_staff ON staff_memberships(staff_id);
	CREATE TABLE staff_custodians (
		resource_kind TEXT NOT NULL,
		resource_id TEXT NOT NULL,
		staff_id TEXT NOT NULL,
		role TEXT NOT NULL,
		granted_at BIGINT NOT NULL,
		granted_by TEXT NOT NULL,
		removed_at BIGINT,
		removed_by TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX staff_custodians_resource ON staff_custodians(resource_kind, resource_id);
	CREATE INDEX staff_custodians_staff ON staff_custodians(staff_id);
	CREATE TABLE staff_offboardings (
		id TEXT PRIMARY KEY,
		staff_id TEXT NOT NULL,
		departed_at BIGINT NOT NULL,
		reason TEXT NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		last_error TEXT NOT NULL DEFAULT '',
		done_at BIGINT
	);
	CREATE TABLE staff_revocations (
		kid TEXT PRIMARY KEY,
		staff_id TEXT NOT NULL,
		due_at BIGINT NOT NULL,
		reason TEXT NOT NULL,
		done_at BIGINT
	);
	CREATE TABLE staff_scim_tokens (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		hash TEXT NOT NULL UNIQUE,
		created_at BIGINT NOT NULL,
		created_by TEXT NOT NULL,
		revoked_at BIGINT
	);
	CREATE TABLE staff_changes (
		seq BIGINT PRIMARY KEY,
		at BIGINT NOT NULL,
		actor TEXT NOT NULL,
		action TEXT NOT NULL,
		entity TEXT NOT NULL,
		detail TEXT NOT NULL
	)`,
	// The identity provider that provisioned each identity and group ('' for
	// one made by custos or an administrator), back-filled from the change log.
	`ALTER TABLE staff_people ADD COLUMN provider TEXT NOT NULL DEFAULT '';
	ALTER TABLE staff_groups ADD COLUMN provider TEXT NOT NULL DEFAULT '';
	UPDATE staff_people SET provider = COALESCE((SELECT substr(c.actor, 6) FROM staff_changes c
		WHERE c.entity = staff_people.id AND c.action = 'person.create' AND c.actor LIKE 'scim:%' ORDER BY c.seq LIMIT 1), '');
	UPDATE staff_groups SET provider = COALESCE((SELECT substr(c.actor, 6) FROM staff_changes c
		WHERE c.entity = staff_groups.id AND c.action = 'group.create' AND c.actor LIKE 'scim:%' ORDER BY c.seq LIMIT 1), '')`,
}

// New migrates the staff tables in db and returns the directory.
func New(ctx context.Context, db *store.DB, cfg Config) (*Directory, error) {
	if db == nil {
		return nil, fmt.Errorf("failed to open staff directory: %w: nil store", ErrInvalid)
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyRevoke
	}
	if cfg.Policy != PolicyRevoke && cfg.Policy != PolicyGrace {
		return nil, fmt.Errorf("failed to open staff directory: %w: policy %q", ErrInvalid, cfg.Policy)
	}
	if cfg.MaxTokenTTL <= 0 {
		cfg.MaxTokenTTL = DefaultMaxTokenTTL
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.GroupRules == nil {
		cfg.GroupRules = DefaultGroupRules
	}
	for i, r := range cfg.GroupRules {
		if r.Group == "" || r.ID == "" || (r.Kind != SigningKey && r.Kind != ClientSecret) || !validRole(r.Role) {
			return nil, fmt.Errorf("failed to open staff directory: %w: group_rules[%d]", ErrInvalid, i)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := db.Migrate(ctx, "staff", migrations); err != nil {
		return nil, fmt.Errorf("failed to migrate staff tables: %w", err)
	}
	return &Directory{db: db, cfg: cfg, now: cfg.Now, log: cfg.Log}, nil
}

func validRole(r Role) bool { return r == Operate || r == Administer || r == Accessed }

func validKind(k Kind) bool { return k == Employee || k == Contractor || k == Vendor || k == Service }

// randReader is where tokens and ids come from.
var randReader = rand.Reader

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

func (d *Directory) alert(ctx context.Context, rule, severity, entity, summary string) {
	d.log.Warn("staff alert", "rule", rule, "severity", severity, "entity", entity, "summary", summary)
	if d.cfg.Alerts != nil {
		d.cfg.Alerts.Raise(ctx, rule, severity, entity, summary)
	}
}
