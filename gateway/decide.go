package gateway

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/token"
)

// Request is the original request a decision is about, as the reverse
// proxy, the middleware or a decision API (forward-auth, ext_authz) saw it.
type Request struct {
	Method string
	// Host is the Host the client sent (it selects host-specific routes).
	Host string
	// Target is the request target as sent: the percent-encoded path and
	// optional query (r.RequestURI, nginx's $request_uri, X-Forwarded-Uri,
	// Envoy's :path). An absolute-form target is accepted too.
	Target string
	// Header carries Authorization, User-Agent and, from a trusted proxy,
	// X-Forwarded-For. It is only read.
	Header http.Header
	// Peer is the address of the connection the request came over,
	// "ip:port" or "ip".
	Peer string
	// Scheme is the scheme the client used, "https" or "http" (empty:
	// http); it matters only for DPoP proofs without Config.DPoP.PublicURL.
	Scheme string
}

// Decision is the gateway's verdict on one request and what the access
// event will record about it. Build one with [Gateway.Decide] and report
// what became of the request with [Gateway.Emit].
type Decision struct {
	// Verdict is event.Allow or event.Deny.
	Verdict event.Verdict
	// Reason is the refusal reason of a denied request; for an allowed one,
	// the first check that failed in observe mode, or "".
	Reason event.Reason
	// Claims of the token, nil when there was none or it was unreadable.
	// They are verified only when Verified is true.
	Claims   *token.Claims
	KID      string
	Verified bool
	// Route is the matched route's pattern, "" when none matched.
	Route string
	// Path is the canonical path the route was matched on: the path the
	// upstream must receive, exactly. "" when the request has none (it is
	// then refused when routes are configured).
	Path string
	// Query is the raw query of the target, forwarded unchanged.
	Query string
	// Subject is the member whose data the request reads: the route's
	// subject when the route binds one, else the token's subject.
	Subject     string
	DataClasses []string
	// Source is the client address (see Config.TrustedProxies).
	Source netip.Addr

	// For the access event.
	method, userAgent string
	start, now        time.Time
	rt                *route
	routeSubj         string
	rawPath           string
	u                 url.URL   // scratch for matching
	identity          [3]string // values of the identity headers

	// Where Source is, when a country hold made the gateway look it up
	// before deciding (located).
	country string
	asn     uint32
	located bool

	observed event.Reason
	deny     event.Reason
	useNonce bool // a DPoP proof lacked the current nonce
}

// noDataClasses is the data classes of a request that matched no route:
// an empty list, not null, in events.
var noDataClasses = []string{}

// Allowed reports whether the request may go to the upstream.
func (d *Decision) Allowed() bool { return d.Verdict == event.Allow }

// Outcome is what became of a decided request, for its access event.
type Outcome struct {
	Status int   // HTTP status sent to the client (0: 200)
	Bytes  int64 // response body bytes sent to the client
	// Upstream is the time spent waiting on the upstream, excluded from the
	// gateway's overhead histogram.
	Upstream time.Duration
}

// Decide runs every check on r, in the package's check order, and returns
// the decision. It does not emit the access event: call [Gateway.Emit] once
// the request is answered. The reverse proxy, the middleware and the
// decision API all decide through it.
func (g *Gateway) Decide(ctx context.Context, r Request) *Decision {
	d := &Decision{start: time.Now(), now: g.now(), method: r.Method, DataClasses: noDataClasses}
	if r.Header != nil {
		d.userAgent = r.Header.Get("User-Agent")
	}
	d.Source = g.source(r.Peer, r.Header)
	g.check(ctx, &r, d)
	d.Verdict, d.Reason = event.Allow, d.observed
	if d.deny != "" {
		d.Verdict, d.Reason = event.Deny, d.deny
	}
	if d.rt != nil {
		d.Route = d.rt.Pattern
		d.DataClasses = d.rt.DataClasses
	}
	if d.Claims != nil {
		d.Subject = d.Claims.Subject
	}
	if d.routeSubj != "" {
		d.Subject = d.routeSubj
	}
	return d
}

// Emit sends the decision's access event and counts it; call it once per
// decided request.
func (g *Gateway) Emit(d *Decision, o Outcome) {
	g.emit(d, o)
	g.overhead.Observe((time.Since(d.start) - o.Upstream).Seconds())
}

// SetIdentity sets the identity headers the upstream may trust
// (Config.SubjectHeader, X-Custos-Jti, X-Custos-Kid) from an allowed
// decision whose token verified; other decisions set nothing. Call it after
// every other change to h.
func (g *Gateway) SetIdentity(h http.Header, d *Decision) {
	if !d.Allowed() || !d.Verified || d.Claims == nil {
		return
	}
	// One backing array for the three values.
	d.identity = [3]string{d.Claims.Subject, d.Claims.JTI, d.KID}
	h[g.subjKey] = d.identity[0:1:1]
	h[HeaderJTI] = d.identity[1:2:2]
	h[HeaderKID] = d.identity[2:3:3]
}

// Refuse writes the RFC 6750 refusal (401, WWW-Authenticate: Bearer
// error="invalid_token") for reason.
func Refuse(w http.ResponseWriter, reason event.Reason) { refuse(w, reason) }

type decisionKey struct{}

// DecisionFromContext returns the decision the middleware made for this
// request, for handlers behind [Gateway.Middleware].
func DecisionFromContext(ctx context.Context) (*Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(*Decision)
	return d, ok
}

// Warnings lists what an operator must know about this gateway's
// configuration at start-up: a gateway with no routes binds no subject, so
// any valid token reads any member's data through it.
func (g *Gateway) Warnings() []string {
	var w []string
	if len(g.cfg.Routes) == 0 {
		w = append(w, "gateway has no routes: subjects are not bound to tokens and every path is forwarded; configure gateway.routes")
	} else if g.cfg.Unmatched == Forward {
		w = append(w, "gateway.unmatched is forward: paths that match no route are forwarded with no subject binding")
	}
	return w
}
