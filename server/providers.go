package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/provider"
	"github.com/custos-dev/custos/wire"
)

// openProviders builds the configured identity providers and the recorder
// their issuer credentials write through.
func (s *Server) openProviders(context.Context) (err error) {
	s.providers, err = provider.NewSet(s.Config.ProviderConfigs(), nil, s.now)
	if err != nil {
		return err
	}
	s.recorder = &provider.Recorder{Ledger: s.Ledger, Now: s.now, Recorded: s.providerIssued}
	return nil
}

// providerIssued hands a new record to detection's issuance detectors as
// an issuance by client PROVIDER:client_id. A service token (subject the
// client) is not judged, as custos's own are not. A record without the
// provider's login session gets one of its own per subject: custos does
// not see the provider's logins, so issuance_without_login judges only
// the records that name one (Keycloak's sessionId).
func (s *Server) providerIssued(ctx context.Context, p *provider.Config, r provider.Record) {
	if r.Subject == r.ClientID {
		return
	}
	id := "jti:" + r.JTI
	if r.PRV != "" {
		id = "prv:" + r.PRV
	}
	sess := r.Session
	if sess == "" {
		sess = "provider:" + p.Name + ":" + r.Subject
	}
	s.Detect.Issued(detect.Issuance{Time: s.now(), Client: p.Name + ":" + r.ClientID, Subject: r.Subject, Session: sess,
		Caller: authority.CallerOf(ctx), ClientIP: r.ClientIP, JTI: id, KID: r.KID})
}

// issuerOf authenticates an issuer credential and returns its provider: 401
// for a missing, unknown or revoked credential, 403 for a credential of
// another role or of a provider that is not configured, or (name not empty)
// not the one named. On failure it has written the answer.
func (s *Server) issuerOf(w http.ResponseWriter, r *http.Request, name string) (*provider.Config, bool) {
	tok, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="invalid_token"`)
		wire.WriteError(w, http.StatusUnauthorized, "invalid_token", "an issuer credential is required")
		return nil, false
	}
	cr, err := s.Creds.Authenticate(r.Context(), tok)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="invalid_token"`)
		wire.WriteError(w, http.StatusUnauthorized, "invalid_token", "unknown or revoked credential")
		return nil, false
	}
	forbid := func(desc string) (*provider.Config, bool) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="insufficient_scope"`)
		wire.WriteError(w, http.StatusForbidden, "insufficient_scope", desc)
		return nil, false
	}
	if cr.Role != authority.RoleIssuer {
		return forbid(fmt.Sprintf("a %s credential may not call this endpoint (it needs issuer)", cr.Role))
	}
	p, ok := s.providers.Named(cr.Provider)
	if !ok {
		return forbid("the credential's provider " + cr.Provider + " is not configured")
	}
	if name != "" && name != p.Name {
		return forbid("the credential records for provider " + p.Name + ", not " + name)
	}
	return p, true
}

// readBody reads at most provider.MaxBody bytes; on failure it has written
// the answer.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, provider.MaxBody+1))
	if err != nil || len(b) > provider.MaxBody {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("unreadable body, or larger than %d bytes", provider.MaxBody))
		return nil, false
	}
	return b, true
}

// recordLedger serves POST /v1/ledger/record: 201 for a new record, 200
// for a repeat with equal fields, 409 for (iss, id) recorded with other
// fields, 403 for another provider's iss, 503 when the ledger cannot record.
func (s *Server) recordLedger(w http.ResponseWriter, r *http.Request) {
	p, ok := s.issuerOf(w, r, "")
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	rec, err := provider.ParseRecord(body)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if rec.Issuer != p.Issuer {
		wire.WriteError(w, http.StatusForbidden, "insufficient_scope", "the credential records for provider "+p.Name+", whose iss is "+p.Issuer)
		return
	}
	created, err := s.recorder.Record(r.Context(), p, rec)
	if !s.recordAnswered(w, err) {
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	wire.WriteJSON(w, status, map[string]any{"recorded": true, "created": created})
}

// recordAnswered writes the answer for a failed Record and reports whether
// it did not fail.
func (s *Server) recordAnswered(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, provider.ErrConflict):
		wire.WriteError(w, http.StatusConflict, "conflict", "this id is recorded with other fields")
	case errors.Is(err, provider.ErrInvalid):
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
	default:
		if s.Log != nil {
			s.Log.Error("provider record failed", "err", err)
		}
		wire.WriteError(w, http.StatusServiceUnavailable, "ledger_unavailable", "the ledger could not record the token")
	}
	return false
}

// newPRV serves POST /v1/ledger/prv: a fresh provenance id for the caller
// to record and put in its token as custos_prv.
func (s *Server) newPRV(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.issuerOf(w, r, ""); !ok {
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]string{"prv": provider.NewPRV()})
}

// providerCall checks a call to /v1/providers/{name}/...: the caller's
// issuer credential for that provider, the provider of the endpoint's kind,
// and reads the body. On false the answer is written.
func (s *Server) providerCall(w http.ResponseWriter, r *http.Request, kind provider.Kind) (*provider.Config, []byte, bool) {
	p, ok := s.issuerOf(w, r, r.PathValue("name"))
	if !ok {
		return nil, nil, false
	}
	if p.Kind != kind {
		wire.WriteError(w, http.StatusNotFound, "not_found", "provider "+p.Name+" is not of kind "+string(kind))
		return nil, nil, false
	}
	body, ok := readBody(w, r)
	return p, body, ok
}

// hydraTokenHook serves POST /v1/providers/{name}/hydra/token-hook, Ory
// Hydra's token hook: 200 with the session's claims and a recorded
// custos_prv; 403 (Hydra: access_denied) for a client or subject custos
// refuses; 503 (Hydra: server_error) when the ledger cannot record, so no
// token is issued that custos did not record.
func (s *Server) hydraTokenHook(w http.ResponseWriter, r *http.Request) {
	p, body, ok := s.providerCall(w, r, provider.Hydra)
	if !ok {
		return
	}
	h, err := provider.ParseHydraHook(body)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	prv := provider.NewPRV()
	_, err = s.recorder.Record(r.Context(), p, h.Record(p, prv, s.now()))
	if errors.Is(err, provider.ErrInvalid) {
		wire.WriteError(w, http.StatusForbidden, "access_denied", err.Error())
		return
	}
	if !s.recordAnswered(w, err) {
		return
	}
	wire.WriteJSON(w, http.StatusOK, h.HydraAnswer(prv))
}

// keycloakEvent serves POST /v1/providers/{name}/keycloak/event: a
// Keycloak event in its EventRepresentation JSON. An issuing event is
// recorded by its details.token_id (201, or 200 for a repeat); any other
// event is acknowledged and ignored (204).
func (s *Server) keycloakEvent(w http.ResponseWriter, r *http.Request) {
	p, body, ok := s.providerCall(w, r, provider.Keycloak)
	if !ok {
		return
	}
	ev, err := provider.ParseKeycloakEvent(body)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !ev.Issues() {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	created, err := s.recorder.Record(r.Context(), p, ev.Record(p))
	if errors.Is(err, provider.ErrInvalid) {
		wire.WriteError(w, http.StatusForbidden, "access_denied", err.Error())
		return
	}
	if !s.recordAnswered(w, err) {
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	wire.WriteJSON(w, status, map[string]any{"recorded": true, "created": created})
}
