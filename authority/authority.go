// Package authority issues short-lived access tokens (RFC 9068) to registered
// clients, records each in the issuance ledger before handing it out, and
// answers introspection (RFC 7662) and revocation (RFC 7009).
//
// It refuses to issue for decoy subjects (member IDs that belong to no real
// customer) and records a critical security event when asked to.
//
// # Clients and credentials
//
// [Credentials] is the registry, in the shared control-plane store, of the
// clients that may ask for tokens and of the control plane's own bearer
// credentials, each with a [Role] (admin, gateway, detector, scim). Only
// SHA-256 of a secret is stored; a replica answers a positive lookup from
// memory for at most [CacheTTL], so a revocation anywhere holds everywhere
// within a second, and the last admin credential is never revoked
// ([ErrLastAdmin]).
//
// # Subjects
//
// A subject must fit the subject grammar of [token.CheckSubject]: 1 to 256
// bytes of ASCII letters, digits and - _ . @ + :, not "." and without "..".
// Member IDs of digits, UUIDs and e-mail addresses fit; a subject with a
// space, a slash, a percent sign, a control or bidirectional character, or
// a dot segment is refused, because an upstream router or a person could
// read it as another member. Request bodies are read by wire.Unmarshal, so a
// subject named twice, in any letter case, is refused too.
package authority

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

// Defaults of the token policy.
const (
	DefaultTTL         = 5 * time.Minute
	MaxSubjectBytes    = token.MaxSubjectBytes
	MaxScopeBytes      = 1024
	MaxSessionIDBytes  = 256
	SecurityDecoyIssue = "authority.decoy_issue"
)

// Signer gives the key that signs now, and finds the key a kid names in
// whatever state it is, for introspection (keys.Manager).
type Signer interface {
	Signer(ctx context.Context) (keys.Key, crypto.Signer, error)
	Lookup(kid string) (keys.Key, bool)
}

// Ledger records issued tokens durably and answers what it knows of one.
type Ledger interface {
	Put(ctx context.Context, e ledger.Entry) error
	Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error)
	Revoke(ctx context.Context, h ledger.Hash) error
}

// Alerter raises a security alert (detection).
type Alerter interface {
	Raise(ctx context.Context, rule, severity, entity, summary string)
}

// Journal is the audit log; security events are appended to it.
type Journal interface {
	Append(ctx context.Context, kind string, v any) error
}

// LoginRecorder hears of each login the authority serves (detection's
// token_without_login keys sessions by the token's jti).
type LoginRecorder interface {
	Login(sid string, at time.Time)
}

// IssuanceRecorder hears of every token issued and who asked for it
// (detection's issuance-side detectors: by client, session, caller).
type IssuanceRecorder interface {
	Issued(ctx context.Context, c *Client, r *Request, jti, kid string, at time.Time)
}

type callerKey struct{}

// WithCaller returns ctx carrying the address that called the token
// endpoint, for the IssuanceRecorder.
func WithCaller(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, callerKey{}, addr)
}

// CallerOf returns the address WithCaller put in ctx, or "".
func CallerOf(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

// Request is what a client asks for.
type Request struct {
	Subject   string `json:"subject"`
	Audience  string `json:"audience"`
	Scope     string `json:"scope"`
	TTL       int64  `json:"ttl"` // seconds; 0 means the default
	ClientIP  string `json:"client_ip"`
	SessionID string `json:"session_id"`
}

// Issued is the answer to a successful Request.
type Issued struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	JTI         string `json:"jti"`
	KID         string `json:"kid"`
}

// Error is a refusal with its OAuth error code; the HTTP layer maps Code to a status.
type Error struct {
	Code        string // invalid_request, invalid_client, unauthorized_client, access_denied
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func badRequest(format string, a ...any) error {
	return &Error{Code: "invalid_request", Description: fmt.Sprintf(format, a...)}
}

// Authority issues tokens.
type Authority struct {
	Issuer     string
	MaxTTL     time.Duration
	DefaultTTL time.Duration

	signer  Signer
	ledger  Ledger
	decoys  map[string]bool
	checker verdict.Checker
	leeway  time.Duration
	alerter Alerter
	journal Journal
	now     func() time.Time

	// Logins, when set, hears of every token issued.
	Logins LoginRecorder
	// Issuances, when set, hears of every token issued, with its request.
	Issuances IssuanceRecorder

	externals map[string]*external // by issuer
	remote    *keyCache            // fetched key sets of clients and issuers
	log       *slog.Logger
}

// Config is the authority's part of the configuration.
type Config struct {
	Issuer     string        `yaml:"issuer"`
	DefaultTTL time.Duration `yaml:"default_ttl"`
	MaxTTL     time.Duration `yaml:"max_ttl"`
	Decoys     []string      `yaml:"decoys"`
	// Leeway is the clock skew introspection allows on exp, nbf and iat;
	// give it the gateways' leeway so both answer alike (0:
	// verdict.DefaultLeeway).
	Leeway time.Duration `yaml:"leeway"`
	// ExternalIssuers are the identity providers whose ID tokens
	// POST /oauth2/token exchanges for access tokens (RFC 8693).
	ExternalIssuers []ExternalIssuer `yaml:"-"`
	// HTTPClient fetches key sets (clients' jwks_uri, the issuers'
	// jwks_url); nil: a client with a 5 s timeout.
	HTTPClient *http.Client `yaml:"-"`
	// Log hears why an outside JWT was refused (nil: nothing is logged).
	Log *slog.Logger `yaml:"-"`
}

// New returns an authority. alerter and journal may be nil.
func New(cfg Config, s Signer, l Ledger, alerter Alerter, journal Journal, now func() time.Time) (*Authority, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("authority: issuer is required")
	}
	if cfg.MaxTTL <= 0 || cfg.MaxTTL > keys.HardMaxTokenTTL {
		return nil, fmt.Errorf("authority: max_ttl %s must be in (0, %s]", cfg.MaxTTL, keys.HardMaxTokenTTL)
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = min(DefaultTTL, cfg.MaxTTL)
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("authority: default_ttl %s exceeds max_ttl %s", cfg.DefaultTTL, cfg.MaxTTL)
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = verdict.DefaultLeeway
	}
	if cfg.Leeway < 0 || cfg.Leeway > verdict.MaxLeeway {
		return nil, fmt.Errorf("authority: leeway %s outside 0..%s", cfg.Leeway, verdict.MaxLeeway)
	}
	d := make(map[string]bool, len(cfg.Decoys))
	for _, s := range cfg.Decoys {
		d[s] = true
	}
	ext, err := checkExternals(cfg.ExternalIssuers)
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return &Authority{Issuer: cfg.Issuer, MaxTTL: cfg.MaxTTL, DefaultTTL: cfg.DefaultTTL,
		signer: s, ledger: l, decoys: d, alerter: alerter, journal: journal, now: now,
		checker: verdict.Checker{Keys: s, Ledger: provenanceOf(l)}, leeway: cfg.Leeway,
		externals: ext, remote: &keyCache{client: hc, now: now}, log: cfg.Log}, nil
}

// IsDecoy reports whether sub is a configured decoy member.
func (a *Authority) IsDecoy(sub string) bool { return a.decoys[sub] }

// Validate checks a request against the input rules without side effects.
func (a *Authority) Validate(c *Client, r *Request) error {
	if r.Subject == "" {
		return badRequest("subject is required")
	}
	if err := token.CheckSubject(r.Subject); err != nil {
		return badRequest("%v", err)
	}
	if len(r.Scope) > MaxScopeBytes || !printable(r.Scope) {
		return badRequest("scope must be at most %d bytes of printable characters", MaxScopeBytes)
	}
	if len(r.SessionID) > MaxSessionIDBytes || !printable(r.SessionID) {
		return badRequest("session_id must be at most %d bytes of printable characters", MaxSessionIDBytes)
	}
	if r.TTL < 0 {
		return badRequest("ttl must not be negative")
	}
	if time.Duration(r.TTL)*time.Second > a.MaxTTL || r.TTL > int64(a.MaxTTL/time.Second) {
		return badRequest("ttl %ds exceeds the policy maximum of %ds", r.TTL, int64(a.MaxTTL/time.Second))
	}
	if r.ClientIP != "" {
		if _, err := netip.ParseAddr(r.ClientIP); err != nil {
			return badRequest("client_ip is not an IP address")
		}
	}
	if r.Audience == "" {
		return badRequest("audience is required")
	}
	for _, aud := range c.Audiences {
		if aud == r.Audience {
			return nil
		}
	}
	return &Error{Code: "unauthorized_client", Description: "audience is not registered for this client"}
}

// Issue validates r for client c, signs a token and records it in the ledger.
// The token is returned only after its ledger record is durable.
func (a *Authority) Issue(ctx context.Context, c *Client, r Request) (Issued, error) {
	return a.issue(ctx, c, r, token.Confirmation{})
}

// issue is Issue for a token bound to cnf when cnf is not zero (a DPoP
// token, RFC 9449 section 6).
func (a *Authority) issue(ctx context.Context, c *Client, r Request, cnf token.Confirmation) (Issued, error) {
	if err := a.Validate(c, &r); err != nil {
		return Issued{}, err
	}
	if a.decoys[r.Subject] {
		a.security(ctx, SecurityDecoyIssue, "critical", "subject:"+r.Subject,
			fmt.Sprintf("client %s asked for a token for decoy member %s", c.Name, r.Subject))
		return Issued{}, &Error{Code: "access_denied", Description: "subject may not receive tokens"}
	}
	ttl := a.DefaultTTL
	if r.TTL > 0 {
		ttl = time.Duration(r.TTL) * time.Second
	}
	key, s, err := a.signer.Signer(ctx)
	if err != nil {
		return Issued{}, fmt.Errorf("failed to get a signing key: %w", err)
	}
	now := a.now()
	jti := newJTI()
	cl := token.Claims{
		Issuer: a.Issuer, Subject: r.Subject, Audience: r.Audience,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(ttl).Unix(),
		JTI: jti, Scope: r.Scope, SessionID: r.SessionID, ClientID: c.ID, Cnf: cnf,
	}
	raw, err := token.Sign(s, key.Alg, key.KID, cl)
	if err != nil {
		return Issued{}, fmt.Errorf("failed to sign: %w", err)
	}
	e := ledger.Entry{
		Hash: ledger.HashToken(raw), JTI: jti, KID: key.KID, Subject: r.Subject, Audience: r.Audience,
		Client: c.ID, Session: r.SessionID, ClientIP: r.ClientIP,
		IssuedAt: time.Unix(cl.IssuedAt, 0).UTC(), ExpiresAt: time.Unix(cl.ExpiresAt, 0).UTC(),
	}
	if err := a.ledger.Put(ctx, e); err != nil {
		return Issued{}, fmt.Errorf("failed to record the token: %w", err)
	}
	if a.Logins != nil {
		a.Logins.Login(jti, now)
	}
	if a.Issuances != nil {
		a.Issuances.Issued(ctx, c, &r, jti, key.KID, now)
	}
	typ := "Bearer"
	if cnf.JKT != "" {
		typ = "DPoP"
	}
	return Issued{AccessToken: raw, TokenType: typ, ExpiresIn: int64(ttl / time.Second), JTI: jti, KID: key.KID}, nil
}

// Introspection is the RFC 7662 answer.
type Introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
	Nbf       int64  `json:"nbf,omitempty"`
	Sub       string `json:"sub,omitempty"`
	Aud       string `json:"aud,omitempty"`
	Iss       string `json:"iss,omitempty"`
	JTI       string `json:"jti,omitempty"`
	// Cnf is the key a DPoP-bound token is bound to (RFC 9449 section
	// 6.2): the resource server must check the proof itself.
	Cnf *token.Confirmation `json:"cnf,omitempty"`
}

// Verdict decides on raw for the resource server c, through the same
// function as the gateway (verdict.Checker): signature, key state (a revoked
// key's tokens are refused), times with the configured leeway, issuer, an
// audience registered for c, and provenance in the ledger.
func (a *Authority) Verdict(ctx context.Context, c *Client, raw string) verdict.Result {
	pol := verdict.Policy{Issuer: a.Issuer, Audience: c.Audiences, Leeway: a.leeway}
	return a.checker.Check(ctx, raw, &pol, a.now(), nil)
}

// Introspect answers RFC 7662 introspection by client c: active when
// [Authority.Verdict] finds the token good. Section 4 of the RFC lets the
// server decide that a token not meant for the caller is not active; custos
// does so for audiences not registered for c, as a gateway for other
// audiences would refuse it. The error is a ledger that could not answer.
func (a *Authority) Introspect(ctx context.Context, c *Client, raw string) (Introspection, error) {
	v := a.Verdict(ctx, c, raw)
	if v.Reason == event.ReasonLedgerUnavailable {
		return Introspection{}, fmt.Errorf("failed to check the token's provenance: %w", ledger.ErrUnavailable)
	}
	if !v.Good() {
		return Introspection{Active: false}, nil
	}
	cl := v.Claims
	in := Introspection{Active: true, Scope: cl.Scope, ClientID: cl.ClientID, TokenType: "Bearer",
		Exp: cl.ExpiresAt, Iat: cl.IssuedAt, Nbf: cl.NotBefore, Sub: cl.Subject, Aud: cl.Audience, Iss: cl.Issuer, JTI: cl.JTI}
	if cl.Cnf.JKT != "" {
		in.TokenType, in.Cnf = "DPoP", &token.Confirmation{JKT: cl.Cnf.JKT}
	}
	return in, nil
}

// provenanceOf is the ledger's own Status when it has one (ledger.Ledger:
// the same answer the in-process gateway gets), else its records.
func provenanceOf(l Ledger) verdict.Provenance {
	if p, ok := l.(verdict.Provenance); ok {
		return p
	}
	return ledgerStatus{l}
}

// ledgerStatus answers provenance from the authority's own ledger record.
type ledgerStatus struct{ l Ledger }

func (s ledgerStatus) Status(ctx context.Context, h ledger.Hash) (ledger.Status, error) {
	e, err := s.l.Get(ctx, h)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return ledger.Unknown, nil
	case err != nil:
		return ledger.Unknown, err
	case e.Revoked:
		return ledger.Revoked, nil
	}
	return ledger.Live, nil
}

// Revoke revokes raw if this authority issued it to client c (RFC 7009: an
// unknown token is not an error).
func (a *Authority) Revoke(ctx context.Context, c *Client, raw string) error {
	h := ledger.HashToken(raw)
	e, err := a.ledger.Get(ctx, h)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.Client != c.ID {
		return &Error{Code: "unauthorized_client", Description: "token was issued to another client"}
	}
	return a.ledger.Revoke(ctx, h)
}

func (a *Authority) security(ctx context.Context, kind, severity, entity, summary string) {
	if a.journal != nil {
		_ = a.journal.Append(ctx, "security", map[string]string{"kind": kind, "severity": severity, "entity": entity, "summary": summary})
	}
	if a.alerter != nil {
		a.alerter.Raise(ctx, kind, severity, entity, summary)
	}
}

// newJTI returns 128 random bits, base64url.
func newJTI() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}
