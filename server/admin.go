package server

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/keys"
)

type actorKey struct{}

// actorOf returns the staff identity an admin request was authenticated as.
func actorOf(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

// admin wraps h so that only a live admin credential of a staff member who has
// not left may call it. The staff identity becomes the action's actor.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var staffID string
		if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			if adm, err := s.Creds.Admin(strings.TrimSpace(a[7:])); err == nil {
				staffID = adm.StaffID
			}
		} else if s.Console != nil {
			// A console session (cookie, with its CSRF token on writes).
			if sess, ok := s.Console.Sessions().FromRequest(r); ok {
				staffID = sess.StaffID
			}
		}
		if staffID == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="custos-admin"`)
			authority.WriteError(w, http.StatusUnauthorized, "invalid_token", "admin credential required")
			return
		}
		if s.Staff != nil {
			if err := s.Staff.CheckActor(r.Context(), staffID); err != nil {
				authority.WriteError(w, http.StatusForbidden, "access_denied", "credential belongs to a departed staff member")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, staffID)))
	}
}

type keyView struct {
	keys.Key
	Custodians []string `json:"custodians,omitempty"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.Keys.List(r.Context())
	if err != nil {
		authority.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	authority.WriteJSON(w, http.StatusOK, map[string]any{"keys": ks})
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	var b reasonBody
	if r.ContentLength != 0 {
		if err := authority.DecodeJSON(r.Body, &b); err != nil {
			authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	if b.Reason == "" {
		b.Reason = "manual rotation"
	}
	k, err := s.Keys.Rotate(r.Context(), actorOf(r.Context()), b.Reason)
	if err != nil {
		authority.WriteError(w, http.StatusServiceUnavailable, "rotation_failed", err.Error())
		return
	}
	authority.WriteJSON(w, http.StatusOK, k)
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	var b reasonBody
	if err := authority.DecodeJSON(r.Body, &b); err != nil {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if strings.TrimSpace(b.Reason) == "" {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", "a reason is required")
		return
	}
	kid := r.PathValue("kid")
	if err := s.Keys.Revoke(r.Context(), kid, actorOf(r.Context()), b.Reason); err != nil {
		if errors.Is(err, keys.ErrNotFound) {
			authority.WriteError(w, http.StatusNotFound, "not_found", "no such key")
			return
		}
		authority.WriteError(w, http.StatusServiceUnavailable, "revocation_failed", err.Error())
		return
	}
	k, _ := s.Keys.Lookup(kid)
	authority.WriteJSON(w, http.StatusOK, k)
}

func (s *Server) revokedKeys(w http.ResponseWriter, r *http.Request) {
	ks, err := s.Keys.List(r.Context())
	if err != nil {
		authority.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	out := []string{}
	for _, k := range ks {
		if k.State == keys.Revoked || k.State == keys.Retired {
			out = append(out, k.KID)
		}
	}
	authority.WriteJSON(w, http.StatusOK, out)
}

type addClientBody struct {
	Name     string   `json:"name"`
	Audience []string `json:"audience"`
	HeldBy   string   `json:"held_by"`
}

func (s *Server) addClient(w http.ResponseWriter, r *http.Request) {
	var b addClientBody
	if err := authority.DecodeJSON(r.Body, &b); err != nil {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if b.HeldBy == "" {
		b.HeldBy = actorOf(r.Context())
	}
	if err := s.journal(r.Context(), "client.add", map[string]any{"name": b.Name, "audience": b.Audience, "held_by": b.HeldBy, "actor": actorOf(r.Context())}); err != nil {
		authority.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return
	}
	c, secret, err := s.Creds.AddClient(r.Context(), b.Name, b.Audience, b.HeldBy)
	if err != nil {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	authority.WriteJSON(w, http.StatusCreated, map[string]any{"client_id": c.ID, "client_secret": secret, "name": c.Name, "audiences": c.Audiences})
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	authority.WriteJSON(w, http.StatusOK, map[string]any{"clients": s.Creds.Clients()})
}

type addSCIMTokenBody struct {
	Name string `json:"name"`
}

func (s *Server) addSCIMToken(w http.ResponseWriter, r *http.Request) {
	var b addSCIMTokenBody
	if err := authority.DecodeJSON(r.Body, &b); err != nil {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := s.journal(r.Context(), "scim.token.add", map[string]any{"name": b.Name, "actor": actorOf(r.Context())}); err != nil {
		authority.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return
	}
	tok, err := s.Staff.AddSCIMToken(r.Context(), b.Name, actorOf(r.Context()))
	if err != nil {
		authority.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	authority.WriteJSON(w, http.StatusCreated, map[string]string{"token": tok})
}

func (s *Server) journal(ctx context.Context, kind string, v any) error {
	if s.Audit == nil {
		return nil
	}
	return s.Audit.Append(ctx, kind, v)
}
