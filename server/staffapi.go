package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
	"github.com/custos-dev/custos/wire"
)

// HygieneAnswer is the answer of GET /v1/keys/hygiene.
type HygieneAnswer struct {
	Policy   staff.HygienePolicy `json:"policy"`
	Keys     int                 `json:"keys"`
	Findings []staff.Finding     `json:"findings"`
}

// hygienePolicy reads ?max_age=DURATION and ?max_keys=N over the defaults;
// 0 turns a check off.
func hygienePolicy(r *http.Request) (staff.HygienePolicy, error) {
	p := staff.DefaultHygienePolicy
	q := r.URL.Query()
	if v := q.Get("max_age"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return p, errors.New("max_age must be a non-negative duration such as 2160h")
		}
		p.MaxKeyAge = d
	}
	if v := q.Get("max_keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return p, errors.New("max_keys must be a non-negative integer")
		}
		p.MaxKeysPerCustodian = n
	}
	return p, nil
}

// keyHygiene serves GET /v1/keys/hygiene: staff.Directory.Hygiene over every key.
func (s *Server) keyHygiene(w http.ResponseWriter, r *http.Request) {
	p, err := hygienePolicy(r)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	ks, err := s.Keys.List(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	fs, err := s.Staff.Hygiene(r.Context(), ks, p)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	live := 0
	for _, k := range ks {
		if k.State == keys.Active || k.State == keys.VerifyOnly {
			live++
		}
	}
	wire.WriteJSON(w, http.StatusOK, HygieneAnswer{Policy: p, Keys: live, Findings: fs})
}

// CustodiansAnswer is the answer of GET and POST /v1/keys/{kid}/custodians.
type CustodiansAnswer struct {
	KID        string            `json:"kid"`
	Custodians []staff.Custodian `json:"custodians"`
}

// AddCustodianBody is the body of POST /v1/keys/{kid}/custodians.
type AddCustodianBody struct {
	StaffID string     `json:"staff_id"`
	Role    staff.Role `json:"role"`
}

func (s *Server) writeCustodians(w http.ResponseWriter, r *http.Request, kid string, status int) {
	cs, err := s.Staff.Custodians(r.Context(), staff.SigningKey, kid)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	wire.WriteJSON(w, status, CustodiansAnswer{KID: kid, Custodians: cs})
}

func (s *Server) listCustodians(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	if _, ok := s.Keys.Lookup(kid); !ok {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no such key")
		return
	}
	s.writeCustodians(w, r, kid, http.StatusOK)
}

// addCustodian records a custodian of a key, attributed to the caller.
func (s *Server) addCustodian(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	if _, ok := s.Keys.Lookup(kid); !ok {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no such key")
		return
	}
	var b AddCustodianBody
	if err := wire.Decode(r.Body, &b); err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if b.StaffID == "" {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "staff_id is required")
		return
	}
	if b.Role == "" {
		b.Role = staff.Operate
	}
	actor := actorOf(r.Context())
	if err := s.journal(r.Context(), "custodian.add", map[string]any{"kid": kid, "staff_id": b.StaffID, "role": b.Role, "actor": actor}); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the change could not be recorded in the audit log")
		return
	}
	if err := s.Staff.AddCustodian(r.Context(), staff.SigningKey, kid, b.StaffID, b.Role, actor); err != nil {
		switch {
		case errors.Is(err, staff.ErrNotFound):
			wire.WriteError(w, http.StatusNotFound, "not_found", "no such staff identity")
		case errors.Is(err, staff.ErrDeparted):
			wire.WriteError(w, http.StatusConflict, "departed", "a departed staff member cannot become a custodian")
		case errors.Is(err, staff.ErrInvalid):
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		default:
			wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		}
		return
	}
	s.writeCustodians(w, r, kid, http.StatusOK)
}

// listStaff serves GET /v1/staff: every identity that was not deleted.
func (s *Server) listStaff(w http.ResponseWriter, r *http.Request) {
	ps, err := s.Staff.People(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writePage(w, r, "staff", ps, func(p staff.Person) string { return p.ID })
}
