package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/wire"
)

type actorKey struct{}

// actorOf returns who an authenticated request acts as: the staff identity
// of its credential, or "credential:NAME" for one bound to nobody.
func actorOf(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

// Endpoint classes: which roles may call what. Everything not named here
// that needs a credential is admin only; /scim/v2 takes scim credentials
// only (staff.SCIMHandler through scimAuth).
var (
	// rolesFollow may follow the ledger and post access events: what a
	// standalone gateway does.
	rolesFollow = []authority.Role{authority.RoleAdmin, authority.RoleGateway, authority.RoleDetector}
	// rolesAlerts may read alerts and incidents: what a detector needs besides.
	rolesAlerts = []authority.Role{authority.RoleAdmin, authority.RoleDetector}
	rolesAdmin  = []authority.Role{authority.RoleAdmin}
	// rolesAny may ask which credential they hold.
	rolesAny = []authority.Role{authority.RoleAdmin, authority.RoleGateway, authority.RoleDetector, authority.RoleSCIM}
)

// admin wraps h so that only a live admin credential (or a console session
// of one) of a staff member who has not left may call it.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc { return s.allow(rolesAdmin, h) }

// allow wraps h so that only a live credential of one of roles may call it:
// 401 for a missing, unknown or revoked credential (and a
// departed_credential_use alert when it was a departed person's), 403 for a
// live credential of another role. The credential's actor becomes the
// action's actor.
func (s *Server) allow(roles []authority.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		unauthorized := func(desc string) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="invalid_token"`)
			wire.WriteError(w, http.StatusUnauthorized, "invalid_token", desc)
		}
		var actor, person string
		if a := r.Header.Get("Authorization"); a != "" {
			tok, ok := bearerToken(a)
			if !ok {
				unauthorized("a bearer credential is required")
				return
			}
			cr, err := s.Creds.Authenticate(r.Context(), tok)
			if err != nil {
				if errors.Is(err, authority.ErrRevoked) && cr.Person != "" && s.Staff != nil {
					// Raises departed_credential_use when its person has left.
					_ = s.Staff.CheckActor(r.Context(), cr.Person)
				}
				unauthorized("unknown or revoked credential")
				return
			}
			if !slices.Contains(roles, cr.Role) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="insufficient_scope"`)
				wire.WriteError(w, http.StatusForbidden, "insufficient_scope",
					fmt.Sprintf("a %s credential may not call this endpoint (it needs %s)", cr.Role, roleList(roles)))
				return
			}
			actor, person = cr.Actor(), cr.Person
			if strings.HasSuffix(r.URL.Path, "/stream") {
				// A stream outlives its authorisation check: it ends when
				// its credential is revoked, at any replica.
				ctx, cancel := context.WithCancel(r.Context())
				defer cancel()
				go s.watchCredential(ctx, cancel, tok)
				r = r.WithContext(ctx)
			}
		} else if s.Console != nil && slices.Contains(roles, authority.RoleAdmin) {
			// A console session (cookie, with its CSRF token on writes),
			// as long as the admin credential it logged in with lives.
			if sess, ok := s.Console.Sessions().FromRequest(r); ok {
				if cr, err := s.Creds.Get(r.Context(), sess.AdminID); err == nil && cr.RevokedAt == nil {
					actor, person = sess.StaffID, sess.StaffID
				}
			}
		}
		if actor == "" {
			unauthorized("a credential is required")
			return
		}
		if s.Staff != nil && person != "" {
			if err := s.Staff.CheckActor(r.Context(), person); err != nil {
				unauthorized("credential belongs to a departed staff member")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, actor)))
	}
}

// watchCredential calls cancel once tok no longer authenticates, checking
// every authority.CacheTTL until ctx ends.
func (s *Server) watchCredential(ctx context.Context, cancel context.CancelFunc, tok string) {
	t := time.NewTicker(authority.CacheTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Creds.Authenticate(ctx, tok); err != nil && ctx.Err() == nil {
				cancel()
				return
			}
		}
	}
}

// bearerToken reads "Bearer TOKEN" in any letter case of the scheme.
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

func roleList(roles []authority.Role) string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return strings.Join(out, " or ")
}

// scimAuth lets scim credentials call /scim/v2 as their identity provider.
type scimAuth struct{ c *authority.Credentials }

func (a scimAuth) SCIMProvider(ctx context.Context, tok string) (string, error) {
	cr, err := a.c.Authenticate(ctx, tok)
	if err != nil {
		return "", staff.ErrUnauthorized
	}
	if cr.Role != authority.RoleSCIM {
		return "", staff.ErrForbidden
	}
	return cr.Provider, nil
}

var _ staff.SCIMAuthenticator = scimAuth{}

type keyView struct {
	keys.Key
	Custodians []string `json:"custodians,omitempty"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.Keys.List(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"keys": ks})
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	var b reasonBody
	if r.ContentLength != 0 {
		if err := wire.Decode(r.Body, &b); err != nil {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	if b.Reason == "" {
		b.Reason = "manual rotation"
	}
	k, err := s.Keys.Rotate(r.Context(), actorOf(r.Context()), b.Reason)
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "rotation_failed", err.Error())
		return
	}
	wire.WriteJSON(w, http.StatusOK, k)
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	var b reasonBody
	if err := wire.Decode(r.Body, &b); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if strings.TrimSpace(b.Reason) == "" {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "a reason is required")
		return
	}
	kid := r.PathValue("kid")
	if err := s.Keys.Revoke(r.Context(), kid, actorOf(r.Context()), b.Reason); err != nil {
		if errors.Is(err, keys.ErrNotFound) {
			wire.WriteError(w, http.StatusNotFound, "not_found", "no such key")
			return
		}
		wire.WriteError(w, http.StatusServiceUnavailable, "revocation_failed", err.Error())
		return
	}
	k, _ := s.Keys.Lookup(kid)
	wire.WriteJSON(w, http.StatusOK, k)
}

func (s *Server) revokedKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.Keys.List(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	out := []string{}
	for _, k := range ks {
		if k.State == keys.Revoked || k.State == keys.Retired {
			out = append(out, k.KID)
		}
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

type addClientBody struct {
	Name     string   `json:"name"`
	Audience []string `json:"audience"`
	HeldBy   string   `json:"held_by"`
	// How the client authenticates at /oauth2/token beyond its secret.
	JWKS        json.RawMessage `json:"jwks"`
	JWKSURI     string          `json:"jwks_uri"`
	RequireDPoP bool            `json:"require_dpop"`
}

func (s *Server) addClient(w http.ResponseWriter, r *http.Request) {
	var b addClientBody
	if err := wire.Decode(r.Body, &b); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if b.HeldBy == "" {
		b.HeldBy = actorOf(r.Context())
	}
	if err := s.journal(r.Context(), "client.add", map[string]any{"name": b.Name, "audience": b.Audience, "held_by": b.HeldBy, "actor": actorOf(r.Context())}); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return
	}
	auth := authority.ClientAuth{JWKS: b.JWKS, JWKSURI: b.JWKSURI, RequireDPoP: b.RequireDPoP}
	if err := auth.Check(); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	c, secret, err := s.Creds.AddClient(r.Context(), b.Name, b.Audience, b.HeldBy)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	out := map[string]any{"client_id": c.ID, "client_secret": secret, "name": c.Name, "audiences": c.Audiences}
	if auth.HasKeys() || auth.RequireDPoP {
		if err := s.Creds.SetClientAuth(r.Context(), c.ID, auth); err != nil {
			// A client half registered would authenticate by its secret alone.
			_ = s.Creds.RevokeClientSecret(r.Context(), c.ID, actorOf(r.Context()), "registration failed")
			wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "the client could not be registered")
			return
		}
		out["jwks_uri"], out["require_dpop"] = auth.JWKSURI, auth.RequireDPoP
	}
	wire.WriteJSON(w, http.StatusCreated, out)
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	cs, err := s.Creds.ListClients(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "the store did not answer")
		return
	}
	live := []authority.Client{}
	for _, c := range cs {
		if c.RevokedAt == nil {
			live = append(live, c)
		}
	}
	writePage(w, r, "clients", live, func(c authority.Client) string { return c.ID })
}

type addSCIMTokenBody struct {
	Name string `json:"name"`
}

// addSCIMToken serves POST /v1/scim/tokens (custos scim tokens add): a
// scim credential named, and provisioning as, the identity provider.
func (s *Server) addSCIMToken(w http.ResponseWriter, r *http.Request) {
	var b addSCIMTokenBody
	if err := wire.Decode(r.Body, &b); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	cr, tok, ok := s.addCredential(w, r, addCredentialBody{Name: b.Name, Role: string(authority.RoleSCIM)})
	if !ok {
		return
	}
	wire.WriteJSON(w, http.StatusCreated, map[string]string{"token": tok, "id": cr.ID})
}

func (s *Server) journal(ctx context.Context, kind string, v any) error {
	if s.Audit == nil {
		return nil
	}
	return s.Audit.Append(ctx, kind, v)
}
