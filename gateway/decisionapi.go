package gateway

// The decision API: custos decides, the shop's own proxy (nginx
// auth_request, Traefik forwardAuth, Caddy forward_auth, Envoy ext_authz)
// forwards. Every answer comes from [Gateway.Decide], as in the proxy mode,
// and every call emits that decision's one access event; only how the
// original request arrives and how the answer leaves differ.

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/custos-dev/custos/event"
)

// Paths and headers of the decision API.
const (
	// DecidePath is the forward-auth endpoint (GET).
	DecidePath = "/v1/decide"
	// ExtAuthzPrefix starts the path of Envoy's HTTP ext_authz requests:
	// ANY /ext_authz/<original path>.
	ExtAuthzPrefix = "/ext_authz"
	// HeaderReason carries the refusal reason of a denied decision.
	HeaderReason = "X-Custos-Reason"
)

// Hostile-input bounds of the forward-auth headers.
const (
	MaxOriginalMethod = 32
	MaxOriginalHost   = 255
)

// Query is what a proxy asks the decision API about one original request.
type Query struct {
	// Request is the original request: method, host, target as the client
	// sent it, headers, and Peer, the address of the proxy asking.
	Request
	// ReportedSource is the client address the proxy reports ("ip:port",
	// Envoy's source.address). It is believed only when Peer is a trusted
	// proxy; the X-Forwarded-For rule then applies from it.
	ReportedSource string
	// ListRemoved asks for Verdict.Remove, for a proxy that can remove
	// headers from the request it forwards (Envoy).
	ListRemoved bool

	err error // why ForwardAuth or ExtAuthz could not read the request
}

// Verdict is the decision API's answer about one original request.
type Verdict struct {
	// Status is 200 (allow), 401, or 403 for blocked_source.
	Status int
	// Reason is the refusal reason; empty on allow.
	Reason event.Reason
	// Remove names, on allow and when the Query asked (ListRemoved), the
	// original request's headers that must not reach the upstream under
	// the gateway's header rule (identity spellings, address and path
	// headers), and the identity headers not set.
	Remove []string

	g *Gateway
	d *Decision
}

// SetIdentity sets on h the identity headers the upstream may trust (the
// subject header, X-Custos-Jti, X-Custos-Kid) of an allowed decision whose
// token verified, with [Gateway.SetIdentity]; otherwise it sets nothing.
func (v Verdict) SetIdentity(h http.Header) {
	if v.g != nil && v.d != nil {
		v.g.SetIdentity(h, v.d)
	}
}

// Allowed reports whether the original request may go upstream.
func (v Verdict) Allowed() bool { return v.Status == http.StatusOK }

// Challenge sets on h the WWW-Authenticate challenge of a refusal: DPoP
// (with error invalid_dpop_proof or use_dpop_nonce, and a DPoP-Nonce when
// nonces are on) for dpop_required and bad_dpop_proof, else Bearer
// error="invalid_token".
func (v Verdict) Challenge(h http.Header) {
	if v.g != nil && v.d != nil {
		v.g.dpopChallenge(h, v.Reason, v.d.useNonce)
	}
	if h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+string(v.Reason)+`"`)
	}
}

// errOriginal is why an original request could not be read.
var errOriginal = errors.New("gateway: unusable original request")

// Answer decides q with [Gateway.Decide] and emits its one access event,
// whose status is the decision's (200, 401 or 403). Beyond the checks of
// the proxy mode it refuses, as malformed, an original request the proxy
// did not describe readably (see [ForwardAuth]), whatever the modes; and,
// as unknown_route (observed only when that check is in observe mode), a
// target whose path is not already in the canonical form routes are matched
// on: the proxy mode forwards the canonical path, but the decision API
// cannot change what the upstream receives, so it allows only a path that
// every reader takes as the one checked.
func (g *Gateway) Answer(ctx context.Context, q Query) Verdict {
	r := q.Request
	if q.ReportedSource != "" && g.trustedPeer(r.Peer) {
		if _, err := netip.ParseAddrPort(q.ReportedSource); err == nil {
			r.Peer = q.ReportedSource
		} else if q.err == nil {
			q.err = errOriginal
		}
	}
	if r.Header == nil {
		r.Header = http.Header{}
	}
	if q.err == nil && (len(r.Method) > MaxOriginalMethod || !validMethod(r.Method)) {
		q.err = errOriginal
	}
	d := g.Decide(ctx, r)
	switch {
	case q.err != nil && d.Reason != event.ReasonBlockedSource:
		d.Verdict, d.Reason = event.Deny, event.ReasonMalformed
	case d.Allowed() && !asSent(r.Target, d.Path):
		// As the route check it is: observe mode only records it.
		if g.cfg.Modes[event.ReasonUnknownRoute] != Observe {
			d.Verdict, d.Reason = event.Deny, event.ReasonUnknownRoute
		} else if d.Reason == "" {
			d.Reason = event.ReasonUnknownRoute
		}
	}
	v := Verdict{Status: http.StatusOK, g: g, d: d}
	if !d.Allowed() {
		v.Status, v.Reason = http.StatusUnauthorized, d.Reason
		if d.Reason == event.ReasonBlockedSource {
			v.Status = http.StatusForbidden
		}
	} else if q.ListRemoved {
		set := http.Header{}
		g.SetIdentity(set, d)
		v.Remove = g.removed(r.Header, set)
	}
	g.Emit(d, Outcome{Status: v.Status})
	return v
}

// asSent reports whether target's path is the canonical path exactly.
func asSent(target, canonical string) bool {
	p, _, ok := splitTarget(target)
	return ok && canonical != "" && p == canonical
}

// removed lists the headers of h that the header rule keeps from the
// upstream, and the identity header names not in set. X-Forwarded-For and
// X-Forwarded-Proto are left to the proxy, which sets them itself.
func (g *Gateway) removed(h, set http.Header) []string {
	kept := h.Clone()
	g.stripClientHeaders(kept, true)
	var out []string
	for k := range h {
		if _, ok := kept[k]; !ok && k != "X-Forwarded-Proto" {
			if _, isSet := set[k]; !isSet {
				out = append(out, k)
			}
		}
	}
	for _, k := range []string{g.cfg.SubjectHeader, HeaderJTI, HeaderKID} {
		if _, ok := set[k]; !ok {
			if _, sent := h[k]; !sent {
				out = append(out, k)
			}
		}
	}
	return out
}

// ForwardAuth reads the original request of a forward-auth call (nginx
// auth_request, Traefik forwardAuth, Caddy forward_auth) from r: the method
// from X-Original-Method or X-Forwarded-Method, the target from
// X-Original-URI or X-Forwarded-Uri, the host from X-Forwarded-Host (else
// r.Host). Each may be sent once; when both spellings of one are present
// they must agree, so that a header the client passed through the proxy
// cannot choose what is checked. The token and the rest come from r's own
// headers, which the proxy copies from the original request. An error
// stays in the Query: [Gateway.Answer] refuses it as malformed.
func ForwardAuth(r *http.Request) (q Query, err error) {
	q = Query{Request: Request{Header: r.Header, Peer: r.RemoteAddr, Host: r.Host, Scheme: forwardedProto(r.Header)}}
	defer func() { q.err = err }()
	if q.Method, err = onePair(r.Header, "X-Original-Method", "X-Forwarded-Method"); err != nil {
		return q, err
	}
	if q.Target, err = onePair(r.Header, "X-Original-Uri", "X-Forwarded-Uri"); err != nil {
		return q, err
	}
	if len(q.Method) > MaxOriginalMethod || !validMethod(q.Method) || q.Target == "" {
		return q, errOriginal
	}
	switch hs := r.Header.Values("X-Forwarded-Host"); len(hs) {
	case 0:
	case 1:
		if len(hs[0]) > MaxOriginalHost || strings.ContainsAny(hs[0], " \t\r\n/\\@?#") {
			return q, errOriginal
		}
		q.Host = hs[0]
	default:
		return q, errOriginal
	}
	return q, nil
}

// onePair reads a header sent under either of two names, each at most once
// and equal when both are present.
func onePair(h http.Header, a, b string) (string, error) {
	va, vb := h.Values(a), h.Values(b)
	switch {
	case len(va) > 1 || len(vb) > 1:
		return "", errOriginal
	case len(va) == 1 && len(vb) == 1:
		if va[0] != vb[0] {
			return "", errOriginal
		}
		return va[0], nil
	case len(va) == 1:
		return va[0], nil
	case len(vb) == 1:
		return vb[0], nil
	}
	return "", nil
}

// forwardedProto is the client's scheme as the proxy asking reports it in
// one X-Forwarded-Proto header, or "" (http).
func forwardedProto(h http.Header) string {
	if p := h.Values("X-Forwarded-Proto"); len(p) == 1 && (p[0] == "https" || p[0] == "http") {
		return p[0]
	}
	return ""
}

// validMethod: a non-empty RFC 9110 token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// ExtAuthz reads the original request of an Envoy HTTP ext_authz call: r's
// method, host and headers, and r's request target after ExtAuthzPrefix.
func ExtAuthz(r *http.Request) (q Query, err error) {
	q = Query{Request: Request{Method: r.Method, Host: r.Host, Header: r.Header, Peer: r.RemoteAddr, Scheme: forwardedProto(r.Header)}}
	defer func() { q.err = err }()
	rest, ok := strings.CutPrefix(r.RequestURI, ExtAuthzPrefix)
	switch {
	case !ok || rest != "" && rest[0] != '/' && rest[0] != '?':
		return q, errOriginal
	case rest == "" || rest[0] == '?':
		rest = "/" + rest
	}
	q.Target = rest
	return q, nil
}

// DecisionHandler serves the decision API: GET /v1/decide (forward auth)
// and ANY /ext_authz/<original path> (Envoy HTTP ext_authz). Allow is 200
// with the identity headers; deny is 401 (403 for blocked_source) with
// WWW-Authenticate: Bearer error="invalid_token", X-Custos-Reason and the
// JSON refusal body.
func (g *Gateway) DecisionHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var q Query
		switch {
		case r.URL.Path == DecidePath && strings.HasPrefix(r.RequestURI, DecidePath):
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				writeJSONError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the decision API takes GET")
				return
			}
			q, _ = ForwardAuth(r) // an error stays in q: refused as malformed
		case r.RequestURI == ExtAuthzPrefix || strings.HasPrefix(r.RequestURI, ExtAuthzPrefix+"/") || strings.HasPrefix(r.RequestURI, ExtAuthzPrefix+"?"):
			q, _ = ExtAuthz(r)
		default:
			writeJSONError(w, http.StatusNotFound, "not_found", "the decision API serves "+DecidePath+" and "+ExtAuthzPrefix+"/<path>")
			return
		}
		writeVerdict(w, g.Answer(r.Context(), q))
	})
}

func writeJSONError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + code + `","error_description":"` + desc + `"}` + "\n"))
}

// writeVerdict answers a forward-auth or HTTP ext_authz call.
func writeVerdict(w http.ResponseWriter, v Verdict) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if v.Allowed() {
		v.SetIdentity(h)
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	v.Challenge(h)
	h.Set(HeaderReason, string(v.Reason))
	h.Set("Content-Type", "application/json")
	body := refusalBodies[v.Reason]
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(v.Status)
	_, _ = w.Write(body)
}

// RefusalBody is the JSON body of a refusal for reason.
func RefusalBody(reason event.Reason) []byte { return refusalBodies[reason] }
