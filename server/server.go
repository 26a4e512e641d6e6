// Package server wires every part of custos into one process on the embedded
// default (custos serve): custody, authority, ledger, gateway, staff,
// detection, audit and forensics, behind one HTTP API.
//
// # Use
//
// [Open] builds every part from a [config.Config] (creating the data
// directory on first start), [Server.Run] serves the API, and the in-process
// gateway when a listener is given for it, until its context ends, and
// [Server.Close] closes the parts in reverse order of opening:
//
//	s, err := server.Open(ctx, cfg, log, nil)
//	if err != nil { ... }
//	defer s.Close()
//	err = s.Run(ctx, apiListener, gatewayListener) // gatewayListener may be nil
//
// The role (config.Config.Role) picks what a process runs: "all" (the
// default) and "authority" go through Open and Run, the authority without
// the in-process gateway; "gateway" is [RunGateway], the verifying proxy or
// decision API as its own process following the authority over HTTP;
// "detector" and "forensics" are [RunRole], consumers of the access events
// on the NATS bus of a scale-out deployment (scale.nats).
//
// Inside a process, access events travel on [Server.Bus]. Run subscribes
// detection (dropping events when it falls behind rather than slowing the
// gateway), the forensics writer and the audit digester (both lossless,
// see [event.Bus.Subscribe]); the console, when it starts, subscribes
// dropping; in scale-out, the bridge
// to NATS subscribes losslessly and publishes each event for the other
// roles. Issuance reaches the audit digester, the console, the metrics and
// the bridge through the ledger's own subscription, not the bus.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/keys/sealed"
	"github.com/custos-dev/custos/ledger"
	ledgerredis "github.com/custos-dev/custos/ledger/redis"
	ledgersqlite "github.com/custos-dev/custos/ledger/sqlite"
	"github.com/custos-dev/custos/natsbus"
	"github.com/custos-dev/custos/provider"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/store"
)

// Files in the data directory.
const (
	AdminTokenFile = "admin-token"
	KEKFile        = "kek"
	KeyringFile    = "keyring.sealed"
	StoreFile      = "custos.db"
	LedgerFile     = "ledger.db"
	AuditDir       = "audit"
	EventsDir      = "events"
	bootstrapStaff = "bootstrap-admin"
	checkpointKey  = "audit-checkpoint"
)

// Server is a running custos.
type Server struct {
	Config    config.Config
	Log       *slog.Logger
	DB        *store.DB
	Keys      *keys.Manager
	Ledger    *ledger.Ledger
	Creds     *authority.Credentials
	Authority *authority.Authority
	Staff     *staff.Directory
	Detect    *detect.Engine
	Audit     *audit.Log
	Forensics *forensics.Writer
	Gateway   *gateway.Gateway
	Console   *console.Console
	Bus       *event.Bus
	Registry  *prometheus.Registry

	// FirstStart is true when this start created the data directory's state.
	FirstStart bool

	now        func() time.Time
	closers    []func() error
	keyChanges fanout[keys.Key]
	holdFeed   fanout[gateway.HoldEvent]

	// Background loops (http.go): Run drains the consumers of the bus,
	// then ends quit, then waits for the loops.
	loops, consumers sync.WaitGroup
	drains           []func(context.Context)
	quit             chan struct{}

	ledgerBackend ledgerBackend
	auditStore    any               // the audit log's shared storage, when it has one (readiness)
	peers         *natsbus.Follower // the cross-replica ledger feed, in scale-out
	bus           *natsbus.Bus
	// control carries changes every replica must enforce (peers.go).
	control controlFeed
	metrics *serverMetrics
	handler http.Handler
	tracer  atomic.Pointer[tracerRef]

	providers *provider.Set      // identity providers the shop keeps
	recorder  *provider.Recorder // writes their records to the ledger

	checkpointVerifier note.Verifier
	finder             tokenFinder
	// tokenNonces are the token endpoint's DPoP nonces (oauth.dpop_nonce).
	tokenNonces *dpop.Nonces
	// apiProxies are the proxies in front of the API (trusted_proxies).
	apiProxies clientaddr.Proxies
	mux        *http.ServeMux
}

// Open builds every part from cfg. The data directory is created on first start.
func Open(ctx context.Context, cfg config.Config, log *slog.Logger, now func() time.Time) (*Server, error) {
	return OpenWith(ctx, cfg, log, now, nil)
}

// OpenWith is Open with the token keys' custody given by the caller instead of
// the configured backend (the replay uses it to model a key that was copied).
//
// The parts open in dependency order, each by its opener below; every
// opener registers what it opened in s.closers, so a failure part way closes
// what was opened before it, in reverse.
func OpenWith(ctx context.Context, cfg config.Config, log *slog.Logger, now func() time.Time, tokenCustody keys.Custody) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	s := &Server{Config: cfg, Log: log, now: now, Bus: event.NewBus(), Registry: NewRegistry(), metrics: newServerMetrics()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.openStore(ctx); err != nil {
		return nil, err
	}
	keyring, custody, backend, err := s.openCustody(ctx, tokenCustody)
	if err != nil {
		return nil, err
	}
	if err := s.openAudit(ctx, keyring); err != nil {
		return nil, err
	}
	if err := s.openKeys(ctx, custody, backend); err != nil {
		return nil, err
	}
	for _, open := range []func(context.Context) error{
		s.openLedger,
		s.openDetection,
		s.openAuthority,
		s.openProviders,
		s.openStaff,
		s.openForensics,
		s.openScaleBus,
		s.openGateway,
		s.openHTTP,
	} {
		if err := open(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// openStore notes whether this is the first start, creates the data
// directory and opens the store: PostgreSQL when scale.store is set, else
// SQLite in the data directory.
func (s *Server) openStore(ctx context.Context) (err error) {
	dir := s.Config.Data
	first := filepath.Join(dir, KeyringFile)
	if s.Config.Keys.Keyring == "store" {
		first = filepath.Join(dir, AdminTokenFile) // the keyring is in the store
	}
	if _, statErr := os.Stat(first); errors.Is(statErr, fs.ErrNotExist) {
		s.FirstStart = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create data dir: %w", err)
	}
	if s.Config.Scale.Store != "" {
		s.DB, err = store.OpenPostgres(ctx, s.Config.Scale.Store)
	} else {
		s.DB, err = store.OpenSQLite(filepath.Join(dir, StoreFile))
	}
	if err != nil {
		return err
	}
	s.closers = append(s.closers, s.DB.Close)
	return nil
}

// openCustody opens key custody: the sealed keyring always holds the audit
// checkpoint key; token signing keys live in the configured backend, or in
// tokenCustody when the caller gives one. It returns the keyring, the token
// keys' custody and the name of its backend.
func (s *Server) openCustody(ctx context.Context, tokenCustody keys.Custody) (*sealed.Keyring, keys.Custody, string, error) {
	keyring, err := s.openKeyring(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	s.closers = append(s.closers, keyring.Close)
	switch {
	case tokenCustody != nil:
		return keyring, tokenCustody, "external", nil
	case s.Config.Keys.Backend == "pkcs11":
		tok, err := openPKCS11(s.Config)
		if err != nil {
			return nil, nil, "", err
		}
		s.closers = append(s.closers, tok.Close)
		return keyring, tok, s.Config.Keys.Backend, nil
	}
	return keyring, keyring, s.Config.Keys.Backend, nil
}

// openAudit opens the audit log (MySQL-backed when scale.audit is set),
// its checkpoints signed by the checkpoint key held in the keyring.
func (s *Server) openAudit(ctx context.Context, keyring *sealed.Keyring) (err error) {
	cfg := s.Config
	cpSigner, err := keyring.Signer(checkpointKey)
	if err != nil && !slices.Contains(keyring.IDs(), checkpointKey) {
		// Replicas on a shared keyring may race to make it: one wins, and
		// every one signs with it.
		if _, err = keyring.Generate(ctx, checkpointKey, keys.EdDSA); err == nil || errors.Is(err, sealed.ErrExists) {
			cpSigner, err = keyring.Signer(checkpointKey)
		}
	}
	if err != nil {
		return fmt.Errorf("failed to get the audit checkpoint key: %w", err)
	}
	if _, ok := cpSigner.Public().(ed25519.PublicKey); !ok {
		return errors.New("audit checkpoint key is not Ed25519")
	}
	noteSigner, err := audit.NewNoteSigner(logName(cfg.Issuer), cpSigner)
	if err != nil {
		return err
	}
	if s.checkpointVerifier, err = audit.NewNoteVerifier(logName(cfg.Issuer), cpSigner.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	if cfg.Scale.Audit != "" {
		s.Audit, err = audit.OpenMySQL(ctx, cfg.Scale.Audit, filepath.Join(cfg.Data, AuditDir), noteSigner, audit.Options{})
		s.auditStore = s.Audit
	} else {
		s.Audit, err = audit.Open(ctx, filepath.Join(cfg.Data, AuditDir), noteSigner, audit.Options{})
	}
	if err != nil {
		return fmt.Errorf("failed to open the audit log: %w", err)
	}
	s.closers = append(s.closers, func() error { return s.Audit.Close(context.Background()) })
	return nil
}

// openKeys starts key management over the token keys' custody, with the
// configured algorithm, rotation and ages.
func (s *Server) openKeys(ctx context.Context, custody keys.Custody, backend string) (err error) {
	policy := keys.DefaultPolicy()
	policy.Alg = keys.Alg(s.Config.Keys.Alg)
	policy.RotateEvery = s.Config.Keys.RotateEvery
	policy.MaxKeyAge = s.Config.Keys.MaxKeyAge
	policy.MaxTokenTTL = s.Config.Tokens.MaxTTL
	s.Keys, err = keys.NewManager(ctx, s.DB, custody, backend, policy, s.now, s.Audit)
	if err != nil {
		return fmt.Errorf("failed to start key management: %w", err)
	}
	s.Keys.OnChange(s.keyChanges.publish)
	return nil
}

// openLedger opens the issuance ledger on its backend.
func (s *Server) openLedger(ctx context.Context) (err error) {
	lb, err := openLedgerBackend(ctx, s.Config)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, lb.Close)
	s.finder, _ = lb.(tokenFinder)
	s.ledgerBackend = lb
	s.Ledger, err = ledger.New(ctx, lb, s.now)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, s.Ledger.Close)
	return nil
}

// openDetection starts the detection engine: the built-ins with the
// configured countries, containment when asked, its sinks, its store and
// the custom rules.
func (s *Server) openDetection(ctx context.Context) (err error) {
	cfg := s.Config
	dcfg := detect.DefaultConfig()
	if len(cfg.Detect.AllowedCountries) > 0 {
		dcfg.ForeignOrigin.Allowed = cfg.Detect.AllowedCountries
	}
	dcfg.Containment, dcfg.ContainmentLimits = containPolicies(cfg.Detect)
	s.Detect, err = detect.New(dcfg, s.now)
	if err != nil {
		return err
	}
	s.Detect.SetContainment(s.Containment())
	if err := s.attachSinks(s.Detect); err != nil {
		return err
	}
	if err := s.Detect.SetStore(ctx, s.DB); err != nil {
		return err
	}
	if cfg.Detect.Rules != "" {
		return s.Detect.LoadRules(cfg.Detect.Rules)
	}
	return nil
}

// openAuthority opens the control plane's credentials and the token
// authority, whose logins detection watches.
func (s *Server) openAuthority(ctx context.Context) (err error) {
	cfg := s.Config
	s.Creds, err = authority.OpenCredentials(ctx, s.DB, s.now)
	if err != nil {
		return err
	}
	s.Authority, err = authority.New(authority.Config{
		Issuer: cfg.Issuer, DefaultTTL: cfg.Tokens.DefaultTTL, MaxTTL: cfg.Tokens.MaxTTL, Decoys: cfg.Decoys,
		Leeway: cfg.Gateway.Leeway, ExternalIssuers: externalIssuers(cfg.OAuth), Log: s.Log,
	}, s.Keys, meteredLedger{s.Ledger, s.metrics}, alerter{s.Detect}, s.Audit, s.now)
	if err != nil {
		return err
	}
	s.Authority.Logins = s.Detect
	s.Authority.Issuances = issuanceFeed{s.Detect}
	s.tokenNonces, err = tokenEndpointNonces(cfg.OAuth)
	if err != nil {
		return err
	}
	if s.apiProxies, err = clientaddr.Parse(cfg.TrustedProxies); err != nil {
		return fmt.Errorf("trusted_proxies: %w", err)
	}
	if s.tokenNonces != nil && cfg.OAuth.DPoPNonceSecretEnv == "" && cfg.Scale.Store != "" && s.Log != nil {
		s.Log.Warn("WARNING: oauth.dpop_nonce without oauth.dpop_nonce_secret_env: each authority replica hands out nonces the others refuse")
	}
	return nil
}

// openStaff opens the staff directory, imports the identity providers'
// tokens, makes the bootstrap admin on first start, and has new keys
// inherit their custodians.
func (s *Server) openStaff(ctx context.Context) (err error) {
	policy := staff.PolicyRevoke
	if s.Config.Staff.OffboardGrace {
		policy = staff.PolicyGrace
	}
	s.Staff, err = staff.New(ctx, s.DB, staff.Config{
		Keys: s.Keys, Credentials: []staff.CredentialRevoker{s.Creds}, Clients: s.Creds,
		SCIMAuth: scimAuth{s.Creds}, Guard: s.Creds,
		Alerts: alerter{s.Detect}, Policy: policy, MaxTokenTTL: s.Config.Tokens.MaxTTL, Now: s.now, Log: s.Log,
	})
	if err != nil {
		return err
	}
	if err := s.importSCIMTokens(ctx); err != nil {
		return err
	}
	if err := s.bootstrapAdmin(ctx); err != nil {
		return err
	}
	s.Keys.OnChange(s.inheritCustodians)
	return nil
}

// openForensics opens the writer of the access events in DATA/events.
func (s *Server) openForensics(context.Context) (err error) {
	s.Forensics, err = forensics.NewWriter(filepath.Join(s.Config.Data, EventsDir), forensics.WriterOptions{})
	if err != nil {
		return err
	}
	s.closers = append(s.closers, s.Forensics.Close)
	return nil
}

// openScaleBus connects to the bus of a scale-out deployment (scale.nats)
// and bridges this process's events to it.
func (s *Server) openScaleBus(ctx context.Context) error {
	if s.Config.Scale.NATS == "" {
		return nil
	}
	b, err := openBus(ctx, s.Config, s.Log)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, b.Close)
	s.bus = b
	RegisterBus(s.Registry, b)
	bctx, cancel := context.WithCancel(context.Background())
	s.closers = append(s.closers, func() error { cancel(); return nil })
	s.bridge(bctx, b)
	return nil
}

// openGateway starts the in-process gateway when an upstream or routes are
// configured (never in the authority role of a scale-out deployment), with
// the shared DPoP replay cache when there is one.
func (s *Server) openGateway(ctx context.Context) (err error) {
	cfg := s.Config
	if cfg.Role == "authority" || (cfg.Gateway.Upstream == "" && len(cfg.Gateway.Routes) == 0) {
		return nil
	}
	s.Gateway, err = gateway.New(GatewayConfig(cfg), s.Keys, s.Ledger, s.Bus, s.now)
	if err != nil {
		return err
	}
	closeReplay, err := sharedReplay(ctx, cfg, s.Gateway)
	if closeReplay != nil {
		s.closers = append(s.closers, closeReplay)
	}
	if err != nil {
		return err
	}
	s.closers = append(s.closers, s.Gateway.Close)
	s.Registry.MustRegister(s.Gateway.Collectors()...)
	for _, w := range s.Gateway.Warnings() {
		if s.Log != nil {
			s.Log.Warn("WARNING: " + w)
		}
	}
	return nil
}

// openHTTP builds the routes, the metrics and the instrumented handler, and
// the tracer when telemetry is configured.
func (s *Server) openHTTP(ctx context.Context) error {
	if err := s.openHolds(ctx); err != nil {
		return err
	}
	s.mux = s.routes()
	s.registerMetrics()
	s.handler = s.instrument(s.mux)
	tp, err := NewTracerProvider(ctx, s.Config, "custos")
	if err != nil {
		return err
	}
	if tp != nil {
		s.SetTracerProvider(tp)
		s.closers = append(s.closers, func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return tp.Shutdown(sctx)
		})
	}
	return nil
}

// ledgerBackend is a ledger backend that can be closed.
type ledgerBackend interface {
	ledger.Backend
	Close() error
}

// openLedgerBackend opens Redis when configured (sharded over several when
// scale.redis lists them), else SQLite in the data dir.
func openLedgerBackend(ctx context.Context, cfg config.Config) (ledgerBackend, error) {
	switch urls := cfg.Scale.RedisURLs(); {
	case len(urls) > 1:
		return ledgerredis.OpenSharded(ctx, urls)
	case len(urls) == 1:
		return ledgerredis.Open(ctx, urls[0])
	}
	return ledgersqlite.Open(filepath.Join(cfg.Data, LedgerFile))
}

// GatewayConfig maps the configuration file's gateway section to the gateway's.
func GatewayConfig(cfg config.Config) gateway.Config {
	g := gateway.Config{
		GatewayName: cfg.Gateway.Name, Issuer: cfg.Issuer, Audience: cfg.Gateway.Audience, Leeway: cfg.Gateway.Leeway,
		Decoys: cfg.Decoys, GeoIP: cfg.Gateway.GeoIP, EventsFile: cfg.Gateway.EventsFile,
		TrustedProxies: cfg.Gateway.TrustedProxies, Unmatched: gateway.Unmatched(cfg.Gateway.Unmatched),
		DPoP: gateway.DPoPConfig{PublicURL: cfg.Gateway.DPoP.PublicURL, Window: cfg.Gateway.DPoP.Window,
			ReplayCacheSize: cfg.Gateway.DPoP.ReplayCacheSize, Nonce: cfg.Gateway.DPoP.Nonce},
	}
	if env := cfg.Gateway.DPoP.NonceSecretEnv; env != "" {
		// An unset or unreadable secret leaves an empty one, which
		// gateway.New refuses: replicas must not each invent their own.
		g.DPoP.NonceSecret, _ = base64.StdEncoding.DecodeString(os.Getenv(env))
		if g.DPoP.NonceSecret == nil {
			g.DPoP.NonceSecret = []byte{}
		}
	}
	if len(cfg.Gateway.Observe) > 0 {
		g.Modes = map[event.Reason]gateway.Mode{}
		for _, r := range cfg.Gateway.Observe {
			g.Modes[event.Reason(r)] = gateway.Observe
		}
	}
	g.Routes = slices.Clone(cfg.Gateway.Routes)
	// The configuration was validated; a set that does not build leaves
	// the providers out, so their tokens are refused like any stranger's.
	if set, err := provider.NewSet(cfg.ProviderConfigs(), nil, nil); err == nil && set.Len() > 0 {
		g.Providers = set
	}
	return g
}

// openKeyring opens the sealed keyring, creating it on first start: the
// file in the data directory, or the one in the shared store that every
// authority replica signs with.
func (s *Server) openKeyring(ctx context.Context) (*sealed.Keyring, error) {
	kek, err := s.kek()
	if err != nil {
		return nil, err
	}
	if s.Config.Keys.Keyring == "store" {
		kr, err := sealed.OpenPostgres(ctx, s.DB.DB, kek)
		if err != nil {
			return nil, fmt.Errorf("failed to open the shared keyring (custos never makes new keys over an unreadable keyring): %w", err)
		}
		return kr, nil
	}
	kr, err := sealed.Open(filepath.Join(s.Config.Data, KeyringFile), kek)
	if err != nil {
		return nil, fmt.Errorf("failed to open the keyring (custos never makes new keys over an unreadable keyring): %w", err)
	}
	return kr, nil
}

// kek finds the keyring's key-encryption key. With no source configured, the
// embedded default keeps it in DATA/kek (0600), created with the keyring.
func (s *Server) kek() (sealed.KEK, error) {
	k := s.Config.Keys
	switch {
	case k.KEKEnv != "":
		return sealed.KEKFromEnv(k.KEKEnv)
	case k.PassphraseEnv != "":
		p, ok := os.LookupEnv(k.PassphraseEnv)
		if !ok || p == "" {
			return sealed.KEK{}, fmt.Errorf("keys.passphrase_env: %s is not set", k.PassphraseEnv)
		}
		return sealed.KEKFromPassphrase([]byte(p))
	}
	path := k.KEKFile
	if path == "" {
		path = filepath.Join(s.Config.Data, KEKFile)
		if s.FirstStart {
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				var b [32]byte
				rand.Read(b[:])
				if err := writeFileExcl(path, []byte(base64.StdEncoding.EncodeToString(b[:])+"\n")); err != nil {
					return sealed.KEK{}, err
				}
			}
		}
	}
	return sealed.KEKFromFile(path)
}

// bootstrapAdmin creates, on first start, the bootstrap admin credential in
// DATA/admin-token (0600), bound to the staff identity bootstrap-admin.
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	path := filepath.Join(s.Config.Data, AdminTokenFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	p, err := s.Staff.PersonByUserName(ctx, bootstrapStaff)
	if errors.Is(err, staff.ErrNotFound) {
		p, err = s.Staff.AddPerson(ctx, staff.Person{UserName: bootstrapStaff, DisplayName: "bootstrap admin credential", Kind: staff.Service}, "custos/bootstrap")
	}
	if err != nil {
		return fmt.Errorf("failed to record the bootstrap identity: %w", err)
	}
	if err := s.Audit.Append(ctx, "admin.bootstrap", map[string]string{"staff_id": p.ID, "file": path}); err != nil {
		return fmt.Errorf("failed to record the bootstrap credential: %w", err)
	}
	_, tok, err := s.Creds.AddAdmin(ctx, p.ID)
	if err != nil {
		return err
	}
	// The holder of the bootstrap credential administers the first key until
	// people are named; rotations carry custodians over (inheritCustodians).
	if k, _, err := s.Keys.Signer(ctx); err == nil {
		if err := s.Staff.AddCustodian(ctx, staff.SigningKey, k.KID, p.ID, staff.Administer, "custos/bootstrap"); err != nil {
			return fmt.Errorf("failed to record the first key's custodian: %w", err)
		}
	}
	return writeFileExcl(path, []byte(tok+"\n"))
}

// importSCIMTokens carries the identity providers' tokens made before
// credentials had roles over to scim credentials (same hash, provider = the
// token's name), so they are listed and revoked like any other.
func (s *Server) importSCIMTokens(ctx context.Context) error {
	ts, err := s.Staff.SCIMTokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		added, err := s.Creds.ImportSCIM(ctx, t.Name, t.Hash, t.CreatedBy, t.CreatedAt, t.RevokedAt)
		if err != nil {
			return err
		}
		if added {
			s.Log.Info("SCIM token carried over to a scim credential", "provider", t.Name)
		}
	}
	return nil
}

// inheritCustodians runs after every key change: a key demoted by a rotation
// hands its living custodians to the key that replaced it.
func (s *Server) inheritCustodians(k keys.Key) {
	if k.State != keys.VerifyOnly || k.DemotedAt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ks, err := s.Keys.List(ctx)
	if err != nil {
		s.Log.Error("custodians not carried over to the new key", "from", k.KID, "err", err)
		return
	}
	for _, n := range ks {
		if n.State == keys.Active && n.CreatedAt.Equal(*k.DemotedAt) {
			if err := s.Staff.Inherit(ctx, k.KID, n.KID); err != nil {
				s.Log.Error("custodians not carried over to the new key", "from", k.KID, "to", n.KID, "err", err)
			}
			return
		}
	}
}

func writeFileExcl(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func logName(issuer string) string {
	n := strings.TrimPrefix(strings.TrimPrefix(issuer, "https://"), "http://")
	return strings.TrimSuffix(n, "/") + "/audit"
}

// Close stops every part, last opened first.
func (s *Server) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// alerter adapts detection to the one-method alert interface other parts use.
type alerter struct{ e *detect.Engine }

func (a alerter) Raise(ctx context.Context, rule, severity, entity, summary string) {
	if a.e != nil {
		a.e.Raise(detect.Finding{Rule: rule, Severity: detect.Severity(severity), Entity: entity, Summary: summary})
	}
}
