// Package console is the web console a security team watches: keys, staff,
// live alerts, incidents with their deadline clocks and scope, and audit status.
//
// Pages are server-rendered html/template with htmx and uPlot vendored under
// static/ (see static/VENDOR.md) and embedded, so the console needs no network
// beyond its own origin. Staff with an admin credential log in once
// (POST /console/login) and get a server-side session; every POST carries
// the session's CSRF token, every response a strict Content-Security-Policy,
// and every change is attributed to the session's staff identity.
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/store"
)

// Prefix is where the console is served.
const Prefix = "/console"

// CSP is the Content-Security-Policy of every console response: nothing
// inline, nothing from another origin, no framing.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Keys are the key operations the console shows and runs; keys.Manager provides them.
type Keys interface {
	List(ctx context.Context) ([]keys.Key, error)
	Rotate(ctx context.Context, actor, reason string) (keys.Key, error)
	Revoke(ctx context.Context, kid, actor, reason string) error
}

// Staff is the workforce directory; staff.Directory provides it.
type Staff interface {
	People(ctx context.Context) ([]staff.Person, error)
	Custodians(ctx context.Context, kind staff.ResourceKind, id string) ([]staff.Custodian, error)
	CheckActor(ctx context.Context, staffID string) error
}

// Credentials resolve admin credentials and list clients; authority.Credentials provides them.
type Credentials interface {
	Admin(token string) (*authority.Admin, error)
	Clients() []authority.Client
}

// Detections are what detection found; detect.Engine provides them.
type Detections interface {
	Alerts() []detect.Alert
	Incidents() []detect.Incident
	Actions() []detect.ActionRecord
}

// Audit is the audit log; audit.Log provides it.
type Audit interface {
	Append(ctx context.Context, kind string, v any) error
	Size(ctx context.Context) (uint64, error)
	Checkpoint(ctx context.Context) ([]byte, error)
}

// Config wires the console to the parts it shows. Keys, Staff, Credentials,
// Detect and Audit are required; the rest is optional.
type Config struct {
	Keys        Keys
	Policy      keys.Policy // MaxKeyAge and RotateEvery, shown against each key's age
	Staff       Staff
	Credentials Credentials
	Detect      Detections
	Audit       Audit
	// CheckpointVerifier, if set, verifies the audit checkpoint before it is shown.
	CheckpointVerifier note.Verifier
	// LiveTokens reports the issuance ledger's live token count.
	LiveTokens func() int
	// EventsDir is the forensics event store (forensics.Open); FlushEvents
	// makes written events visible before a scope is computed.
	EventsDir   string
	FlushEvents func() error
	// Locate names an address's country and network, from the gateway's
	// GeoIP databases; without it networks show as bare addresses.
	Locate func(netip.Addr) gateway.Location
	// IsDecoy reports whether a member id is a decoy no customer has.
	IsDecoy func(subject string) bool
	// Organization and Contact go into the regulator report.
	Organization, Contact string
	Log                   *slog.Logger
	Now                   func() time.Time
	// Store, if set, keeps login sessions in the shared control-plane store
	// so that every replica honours and ends them alike.
	Store *store.DB
	// Proxies are the proxies in front of the API (trusted_proxies): a
	// login through one records the client address it forwarded too.
	Proxies clientaddr.Proxies
}

// Sentinel errors.
var (
	ErrConfig       = errors.New("console: incomplete configuration")
	ErrNoEventStore = errors.New("console: no event store configured")
)

//go:embed static/*.js static/*.css
var staticFS embed.FS

//go:embed templates/*.html
var templateFS embed.FS

// Console is the web console. Feed it with Alert, Access and Issued; serve it
// with ServeHTTP under Prefix.
type Console struct {
	cfg      Config
	now      func() time.Time
	log      *slog.Logger
	sessions *Sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
	alerts   broker
	traffic  *traffic

	storeMu sync.Mutex
	store   *forensics.Store
}

// New returns a console over cfg.
func New(cfg Config) (*Console, error) {
	if cfg.Keys == nil || cfg.Staff == nil || cfg.Credentials == nil || cfg.Detect == nil || cfg.Audit == nil {
		return nil, ErrConfig
	}
	c := &Console{cfg: cfg, now: cfg.Now, log: cfg.Log}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.cfg.Policy = cfg.Policy.WithDefaults()
	c.sessions = NewSessions(c.now)
	if cfg.Store != nil {
		ss, err := NewStoreSessions(context.Background(), cfg.Store, c.now)
		if err != nil {
			return nil, err
		}
		c.sessions = ss
	}
	c.traffic = newTraffic(c.now)
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	c.mux = c.routes()
	return c, nil
}

// Sessions are the console's login sessions, for an API that wants to accept them.
func (c *Console) Sessions() *Sessions { return c.sessions }

// Close releases the forensics store, if one was opened.
func (c *Console) Close() error {
	c.storeMu.Lock()
	defer c.storeMu.Unlock()
	if c.store == nil {
		return nil
	}
	err := c.store.Close()
	c.store = nil
	return err
}

// eventStore opens the forensics store on first use.
func (c *Console) eventStore() (*forensics.Store, error) {
	if c.cfg.EventsDir == "" {
		return nil, ErrNoEventStore
	}
	c.storeMu.Lock()
	defer c.storeMu.Unlock()
	if c.store == nil {
		st, err := forensics.OpenWith(c.cfg.EventsDir, forensics.Options{MemoryLimit: "512MB", Now: c.now})
		if err != nil {
			return nil, err
		}
		c.store = st
	}
	return c.store, nil
}

func staticFiles() fs.FS {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	return sub
}
