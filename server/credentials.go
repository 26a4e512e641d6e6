package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/wire"
)

// addCredentialBody is the body of POST /v1/credentials.
type addCredentialBody struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Person   string `json:"person"`
	Provider string `json:"provider"`
}

// CredentialAnswer is the answer of POST /v1/credentials: the credential and
// its token, shown this once.
type CredentialAnswer struct {
	authority.Credential
	Token string `json:"token"`
}

func (s *Server) addCredentialHandler(w http.ResponseWriter, r *http.Request) {
	var b addCredentialBody
	if err := decodeExact(r, &b, "name", "role", "person", "provider"); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	cr, tok, ok := s.addCredential(w, r, b)
	if !ok {
		return
	}
	wire.WriteJSON(w, http.StatusCreated, CredentialAnswer{Credential: cr, Token: tok})
}

// addCredential checks b, resolves its person (a staff id in any letter
// case, or a userName) to a living identity, journals, and adds. On failure
// it has written the answer.
func (s *Server) addCredential(w http.ResponseWriter, r *http.Request, b addCredentialBody) (authority.Credential, string, bool) {
	ctx := r.Context()
	role, err := authority.ParseRole(b.Role)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return authority.Credential{}, "", false
	}
	if role == authority.RoleIssuer {
		if _, ok := s.providers.Named(b.Provider); !ok {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", "an issuer credential names a configured provider (providers[].name), not "+fmt.Sprintf("%q", b.Provider))
			return authority.Credential{}, "", false
		}
	}
	person := strings.TrimSpace(b.Person)
	if person != "" {
		p, err := s.Staff.Person(ctx, strings.ToLower(person))
		if errors.Is(err, staff.ErrNotFound) {
			p, err = s.Staff.PersonByUserName(ctx, person)
		}
		switch {
		case errors.Is(err, staff.ErrNotFound):
			wire.WriteError(w, http.StatusNotFound, "not_found", "no staff identity "+person)
			return authority.Credential{}, "", false
		case err != nil:
			wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "the staff directory did not answer")
			return authority.Credential{}, "", false
		case s.Staff.CheckActor(ctx, p.ID) != nil:
			wire.WriteError(w, http.StatusConflict, "departed", "a credential cannot be bound to a departed staff member")
			return authority.Credential{}, "", false
		}
		person = p.ID
	}
	actor := actorOf(ctx)
	if err := s.journal(ctx, "credential.add", map[string]any{"name": b.Name, "role": role, "person": person, "provider": b.Provider, "actor": actor}); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return authority.Credential{}, "", false
	}
	cr, tok, err := s.Creds.Add(ctx, authority.NewCredential{Name: b.Name, Role: role, Person: person, Provider: b.Provider}, actor)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return authority.Credential{}, "", false
	}
	return cr, tok, true
}

func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request) {
	cs, err := s.Creds.List(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "the store did not answer")
		return
	}
	writePage(w, r, "credentials", cs, func(c authority.Credential) string { return c.ID })
}

// revokeCredential serves POST /v1/credentials/{id}/revoke; the body, if
// any, is {"reason"}. The last live admin credential is not revoked (409).
func (s *Server) revokeCredential(w http.ResponseWriter, r *http.Request) {
	var b reasonBody
	if r.ContentLength != 0 {
		if err := wire.Decode(r.Body, &b); err != nil {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	if b.Reason == "" {
		b.Reason = "revoked by an administrator"
	}
	ctx := r.Context()
	id := strings.ToLower(strings.TrimSpace(r.PathValue("id")))
	cur, err := s.Creds.Get(ctx, id)
	if errors.Is(err, authority.ErrNotFound) || (err == nil && cur.RevokedAt != nil) {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no live credential "+id)
		return
	}
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "the store did not answer")
		return
	}
	actor := actorOf(ctx)
	if err := s.journal(ctx, "credential.revoke", map[string]any{"id": id, "name": cur.Name, "role": cur.Role, "reason": b.Reason, "actor": actor}); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return
	}
	cr, err := s.Creds.Revoke(ctx, id, actor, b.Reason)
	switch {
	case errors.Is(err, authority.ErrLastAdmin):
		wire.WriteError(w, http.StatusConflict, "last_admin", err.Error()+"; add another admin credential first")
		return
	case errors.Is(err, authority.ErrNotFound):
		wire.WriteError(w, http.StatusNotFound, "not_found", "no live credential "+id)
		return
	case err != nil:
		wire.WriteError(w, http.StatusServiceUnavailable, "server_error", err.Error())
		return
	}
	wire.WriteJSON(w, http.StatusOK, cr)
}

// credentialSelf serves GET /v1/credentials/self: the caller's own
// credential, for a process to check what it holds.
func (s *Server) credentialSelf(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "a bearer credential is required (a console session has none)")
		return
	}
	cr, err := s.Creds.Authenticate(r.Context(), tok)
	if err != nil {
		wire.WriteError(w, http.StatusUnauthorized, "invalid_token", "unknown or revoked credential")
		return
	}
	wire.WriteJSON(w, http.StatusOK, cr)
}

// decodeExact is authority.DecodeJSON for a body whose top-level keys must
// be exactly names: encoding/json matches keys in any letter case, so
// {"role":"gateway","ROLE":"admin"} would otherwise ask for an admin.
func decodeExact(r *http.Request, v any, names ...string) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxBody+1))
	if err != nil {
		return fmt.Errorf("failed to read body: %w", err)
	}
	if err := checkKeys(b, names); err != nil {
		return err
	}
	return wire.Unmarshal(b, v)
}

// checkKeys refuses a JSON object with a key that is not one of names
// exactly, or with a key twice.
func checkKeys(b []byte, names []string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("bad JSON body: want an object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("bad JSON body: %v", err)
		}
		k, _ := t.(string)
		known := false
		for _, n := range names {
			known = known || n == k
		}
		if !known {
			return fmt.Errorf("bad JSON body: unknown field %q", k)
		}
		if seen[strings.ToLower(k)] {
			return fmt.Errorf("bad JSON body: field %q given twice", k)
		}
		seen[strings.ToLower(k)] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("bad JSON body: %v", err)
		}
	}
	return nil
}
