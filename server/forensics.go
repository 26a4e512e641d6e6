package server

import (
	"errors"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/wire"
)

// maxIndicatorBody bounds the JSON indicators a scope request may carry.
const maxIndicatorBody = 16 << 20

// ScopeAnswer is the answer of POST /v1/incidents/{id}/scope.
type ScopeAnswer struct {
	Incident  detect.Incident      `json:"incident"`
	Scope     *forensics.Scope     `json:"scope"`
	Deadlines []forensics.Deadline `json:"deadlines"`
}

// IndicatorSpecs derives command-line indicators (forensics.ParseIndicators
// form) from an incident's alerts: the signing keys and token ids they name,
// and their sources (an IPv4 address widened to its /24, an IPv6 address as
// is). Values that would not parse are left out; the result is sorted and
// has no duplicates.
func IndicatorSpecs(alerts []detect.Alert) []string {
	seen := map[string]bool{}
	add := func(kind, v string) {
		v = strings.TrimSpace(v)
		if v == "" {
			return
		}
		switch kind {
		case "ip":
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				return
			}
			a = a.Unmap()
			if a.Is4() {
				v = netip.PrefixFrom(a, 24).Masked().String()
			} else {
				v = a.String()
			}
		case "net":
			p, err := netip.ParsePrefix(v)
			if err != nil || !p.Addr().Is4() {
				return
			}
			kind, v = "ip", p.Masked().String()
		}
		spec := kind + ":" + v
		if _, err := forensics.ParseIndicators([]string{spec}); err == nil {
			seen[spec] = true
		}
	}
	for _, a := range alerts {
		add("kid", a.Attrs["kid"])
		add("jti", a.Attrs["jti"])
		add("ip", a.Attrs["src_ip"])
		add("net", a.Attrs["network"])
		if kind, v, ok := strings.Cut(a.Entity, ":"); ok {
			switch kind {
			case "kid", "jti", "ip", "net":
				add(kind, v)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// incidentAlerts returns the alerts an incident groups, in its order.
func (s *Server) incidentAlerts(inc detect.Incident) []detect.Alert {
	byID := map[string]detect.Alert{}
	for _, a := range s.Detect.Alerts() {
		byID[a.ID] = a
	}
	out := []detect.Alert{}
	for _, id := range inc.Alerts {
		if a, ok := byID[id]; ok {
			out = append(out, a)
		}
	}
	return out
}

// scopeIncident serves POST /v1/incidents/{id}/scope: the body, if any, is
// forensics.Indicators as JSON; without one the indicators come from the
// incident's alerts. ?allow_partial=true skips unreadable event files.
func (s *Server) scopeIncident(w http.ResponseWriter, r *http.Request) {
	inc, ok := s.Detect.Incident(r.PathValue("id"))
	if !ok {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no such incident")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxIndicatorBody))
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "failed to read the body: "+err.Error())
		return
	}
	var ind forensics.Indicators
	if strings.TrimSpace(string(body)) != "" {
		ind, err = forensics.ParseIndicatorsJSON(body)
	} else {
		ind, err = forensics.ParseIndicators(IndicatorSpecs(s.incidentAlerts(inc)))
	}
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := s.journal(r.Context(), "incident.scope", map[string]any{"incident": inc.ID, "indicators": ind, "actor": actorOf(r.Context())}); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", "the scope could not be recorded in the audit log")
		return
	}
	if err := s.Forensics.Flush(); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "server_error", "failed to flush access events: "+err.Error())
		return
	}
	st, err := forensics.OpenWith(filepath.Join(s.Config.Data, EventsDir), forensics.Options{
		AllowPartial: r.URL.Query().Get("allow_partial") == "true", Now: s.now,
	})
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	defer st.Close()
	sc, err := st.Scope(r.Context(), ind, nil)
	if err != nil {
		status, code := http.StatusInternalServerError, "server_error"
		if errors.Is(err, forensics.ErrBadFile) {
			status, code = http.StatusUnprocessableEntity, "unreadable_events"
		}
		wire.WriteError(w, status, code, err.Error())
		return
	}
	defer sc.Close()
	wire.WriteJSON(w, http.StatusOK, ScopeAnswer{Incident: inc, Scope: sc, Deadlines: forensics.Deadlines(inc.Awareness, s.now())})
}
