// Package gateway verifies custos access tokens in front of customer-data
// APIs, as net/http middleware, a reverse proxy, or a decision entry point
// ([Gateway.Decide]) for a proxy the shop already runs, and emits one access
// event per request.
//
// Checks run in this order, each producing its contract reason (see
// event.Reason): blocked_source (a held source prefix, or a held country
// by the GeoIP databases); unknown_route; missing_token; then the token
// verdict shared with introspection (package verdict: malformed; unknown_key,
// revoked_key; bad_signature; expired, not_yet_valid, wrong_issuer,
// wrong_audience; not_issued, revoked_token, ledger_unavailable); then for
// a token bound to a key (cnf.jkt) its DPoP proof (dpop_required,
// bad_dpop_proof; see dpop.go); then decoy_subject, subject_mismatch. A refused request gets 401 with
// WWW-Authenticate: Bearer error="invalid_token" (RFC 6750) and never reaches
// the upstream. Routes are matched on one canonical form of the path, which
// is what the upstream receives (see route.go); client headers an upstream
// could take for the gateway's identity headers or the client's address are
// removed (see header.go).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/token"
	"github.com/custos-dev/custos/verdict"
)

// KeySet finds the verification key a token's kid names.
type KeySet = verdict.KeySet

// Provenance tells whether the issuance ledger knows a token. Any error
// (ledger.ErrUnavailable in particular) refuses the request as
// ledger_unavailable.
type Provenance = verdict.Provenance

// Publisher receives every access event (event.Bus satisfies it). A
// refusal's event is published before the refusal is written, an allowed
// request's once it is answered; a Publisher may block on a refusal until
// its event is stored, and the refusal then waits for it.
type Publisher interface {
	Publish(event.Access)
}

// Gateway holds the checks; it is safe for concurrent use.
type Gateway struct {
	cfg     Config
	ks      KeySet
	prov    Provenance
	pub     Publisher
	now     func() time.Time
	mux     *http.ServeMux
	lenient *http.ServeMux // routes as a case-folding, trailing-slash-tolerant router reads them
	// subjFolded is the subject header's folded name (see foldName).
	subjFolded string
	subjKey    string            // canonical form of Config.SubjectHeader
	routes     map[string]*route // by registered pattern
	decoys     map[string]struct{}
	trusted    clientaddr.Proxies
	geo        *geoDB
	checker    verdict.Checker
	policy     verdict.Policy
	binding    *verdict.Binding
	// tokenSigs and proofSigs count the signatures verified (SignatureChecks).
	tokenSigs, proofSigs atomic.Uint64

	evMu   sync.Mutex
	evFile *os.File

	blockMu   sync.RWMutex
	applyMu   sync.Mutex           // serialises Apply, so the later end of two holds stands
	holds     map[string]Hold      // under applyMu: the holds applied, by id, until their end
	released  map[string]time.Time // under applyMu: ids released early, until the hold's end
	blocks    map[netip.Prefix]Block
	nblocks   atomic.Int32
	countries map[string]CountryBlock // under blockMu
	ncountry  atomic.Int32            // len(countries): no lookup before the decision while 0
	noGeoOnce sync.Once
	unheld    prometheus.Counter

	reqPrefix string
	reqSeq    atomic.Uint64

	requests  *prometheus.CounterVec
	cacheHits prometheus.Counter
	overhead  prometheus.Histogram

	tracer atomic.Pointer[tracer] // nil: no traces
}

type tracer struct{ trace.Tracer }

// SetTracerProvider traces each request's checks with tp (nil: none). The
// span continues the caller's W3C trace context, and the upstream receives
// the gateway's.
func (g *Gateway) SetTracerProvider(tp trace.TracerProvider) {
	if tp == nil {
		g.tracer.Store(nil)
		return
	}
	g.tracer.Store(&tracer{tp.Tracer("github.com/custos-dev/custos/gateway")})
}

// traceContext is the W3C trace context the gateway reads and passes on.
var traceContext = propagation.TraceContext{}

type route struct {
	Route
	seg  int  // subject segment index, -1 for none
	rest bool // subject wildcard takes the rest of the path
}

// New builds a gateway. ks and prov are required; pub may be nil. now is the
// clock for token times and event times (nil: time.Now).
func New(cfg Config, ks KeySet, prov Provenance, pub Publisher, now func() time.Time) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if ks == nil || prov == nil {
		return nil, fmt.Errorf("%w: a key set and a provenance source are required", ErrConfig)
	}
	if now == nil {
		now = time.Now
	}
	g := &Gateway{
		cfg: cfg, ks: ks, prov: prov, pub: pub, now: now,
		mux:     http.NewServeMux(),
		lenient: http.NewServeMux(),
		routes:  map[string]*route{},
		decoys:  map[string]struct{}{},
		blocks:  map[netip.Prefix]Block{},

		countries: map[string]CountryBlock{},
		holds:     map[string]Hold{},
		released:  map[string]time.Time{},
		checker:   verdict.Checker{Keys: ks, Ledger: prov, Cache: verdict.NewCache(cfg.CacheSize), Providers: cfg.Providers},
		policy: verdict.Policy{Issuer: cfg.Issuer, Audience: cfg.Audience, Leeway: cfg.Leeway,
			ProvenanceTimeout: cfg.ProvenanceTimeout},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_gateway_requests_total",
			Help: "Requests seen by the gateway, by verdict and reason (reason is empty for a clean allow).",
		}, []string{"verdict", "reason"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custos_gateway_verified_cache_hits_total",
			Help: "Requests whose token signature was already verified.",
		}),
		unheld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custos_gateway_country_holds_unenforced_total",
			Help: "Country holds (block_country) this gateway received but cannot enforce: it has no GeoIP database.",
		}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "custos_gateway_overhead_seconds",
			Help:    "Time the gateway adds to a request: its checks before the upstream and the access event after, upstream time excluded.",
			Buckets: OverheadBuckets,
		}),
	}
	g.checker.Signatures = &g.tokenSigs
	g.binding = newBinding(cfg.DPoP, now)
	g.binding.Signatures = &g.proofSigs
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	g.reqPrefix = hex.EncodeToString(rnd[:]) + "-"
	g.subjFolded = foldName(cfg.SubjectHeader)
	g.subjKey = textproto.CanonicalMIMEHeaderKey(cfg.SubjectHeader)
	for _, d := range cfg.Decoys {
		g.decoys[d] = struct{}{}
	}
	var err error
	if g.trusted, err = clientaddr.Parse(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("%w: trusted_proxies: %v", ErrConfig, err)
	}
	if err := g.addRoutes(); err != nil {
		return nil, err
	}
	if g.geo, err = openGeo(cfg.GeoIP); err != nil {
		return nil, err
	}
	if cfg.EventsFile != "" {
		g.evFile, err = os.OpenFile(cfg.EventsFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			g.geo.close()
			return nil, fmt.Errorf("failed to open events file: %w", err)
		}
	}
	return g, nil
}

// addRoutes registers each route's pattern, plus its method-less form so the
// same path under another method is bound too.
func (g *Gateway) addRoutes() (err error) {
	register := func(pattern string, rt *route, explicit bool) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if explicit {
					err = fmt.Errorf("%w: route %q: %v", ErrConfig, pattern, p)
				}
			}
		}()
		if _, dup := g.routes[pattern]; dup {
			if explicit {
				return fmt.Errorf("%w: route %q listed twice", ErrConfig, pattern)
			}
			return nil
		}
		g.mux.Handle(pattern, routeHandler{rt})
		g.routes[pattern] = rt
		return nil
	}
	for _, r := range g.cfg.Routes {
		seg, rest, _ := subjectSegment(r)
		rt := &route{Route: r, seg: seg, rest: rest}
		if rt.DataClasses == nil {
			rt.DataClasses = []string{}
		}
		if err := register(r.Pattern, rt, true); err != nil {
			return err
		}
	}
	// Method-less forms after all explicit ones, so an explicit route always wins.
	for _, r := range g.cfg.Routes {
		if i := strings.IndexAny(r.Pattern, " \t"); i >= 0 && !strings.HasPrefix(r.Pattern, "/") {
			_ = register(strings.TrimLeft(r.Pattern[i:], " \t"), g.routes[r.Pattern], false)
		}
	}
	for _, r := range g.cfg.Routes {
		g.addLenient(r.Pattern, g.routes[r.Pattern])
	}
	return nil
}

// Collectors returns the gateway's Prometheus metrics for registration.
func (g *Gateway) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.requests, g.cacheHits, g.overhead, g.unheld}
}

// OverheadBuckets are the bounds of custos_gateway_overhead_seconds: 2 µs to
// about 100 ms, each 1.5 times the one before.
var OverheadBuckets = prometheus.ExponentialBucketsRange(2e-6, 0.1, 28)

// Overhead is the histogram of the time the gateway adds per request.
func (g *Gateway) Overhead() prometheus.Histogram { return g.overhead }

// Close releases the events file and GeoIP databases.
func (g *Gateway) Close() error {
	g.geo.close()
	g.evMu.Lock()
	defer g.evMu.Unlock()
	if g.evFile != nil {
		err := g.evFile.Close()
		g.evFile = nil
		return err
	}
	return nil
}

// Block is one containment entry: requests from Prefix are refused as
// blocked_source until Until.
type Block struct {
	Prefix netip.Prefix `json:"prefix"`
	Until  time.Time    `json:"until"`
	Reason string       `json:"reason"`
}

// Block refuses requests from prefix until the given time.
func (g *Gateway) Block(prefix netip.Prefix, until time.Time, reason string) {
	prefix = prefix.Masked()
	g.blockMu.Lock()
	g.blocks[prefix] = Block{Prefix: prefix, Until: until, Reason: reason}
	g.nblocks.Store(int32(len(g.blocks)))
	g.blockMu.Unlock()
}

// Unblock lifts a block early.
func (g *Gateway) Unblock(prefix netip.Prefix) {
	g.blockMu.Lock()
	delete(g.blocks, prefix.Masked())
	g.nblocks.Store(int32(len(g.blocks)))
	g.blockMu.Unlock()
}

// Blocks lists the blocks still in force.
func (g *Gateway) Blocks() []Block {
	return inForce(g, g.blocks, func(b Block) time.Time { return b.Until })
}

// inForce lists the entries of m (a map under g.blockMu) whose end is still
// ahead.
func inForce[K comparable, V any](g *Gateway, m map[K]V, until func(V) time.Time) []V {
	now := g.now()
	g.blockMu.RLock()
	defer g.blockMu.RUnlock()
	out := make([]V, 0, len(m))
	for _, v := range m {
		if now.Before(until(v)) {
			out = append(out, v)
		}
	}
	return out
}

func (g *Gateway) blocked(ip netip.Addr, now time.Time) bool {
	if g.nblocks.Load() == 0 || !ip.IsValid() {
		return false
	}
	g.blockMu.RLock()
	defer g.blockMu.RUnlock()
	for _, b := range g.blocks {
		if b.Prefix.Contains(ip) && now.Before(b.Until) {
			return true
		}
	}
	return false
}

// CountryBlock is one containment entry by country: requests whose source
// the GeoIP databases place in Country are refused as blocked_source until
// Until.
type CountryBlock struct {
	Country string    `json:"country"`
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason"`
}

// BlockCountry refuses requests from country (ISO 3166-1 alpha-2, as the
// GeoIP databases name it) until the given time. A gateway without a GeoIP
// database cannot tell where a request comes from: it keeps the block,
// serves as before, logs that once and counts it in
// custos_gateway_country_holds_unenforced_total.
func (g *Gateway) BlockCountry(country string, until time.Time, reason string) {
	g.blockMu.Lock()
	g.countries[country] = CountryBlock{Country: country, Until: until, Reason: reason}
	g.ncountry.Store(int32(len(g.countries)))
	g.blockMu.Unlock()
	if len(g.geo.readers) == 0 {
		g.unheld.Inc()
		g.noGeoOnce.Do(func() {
			slog.Error("gateway has no GeoIP database (gateway.geoip): country holds are NOT enforced; requests from the held country are served",
				"country", country, "gateway", g.cfg.GatewayName)
		})
	}
}

// UnblockCountry lifts a country block early.
func (g *Gateway) UnblockCountry(country string) {
	g.blockMu.Lock()
	delete(g.countries, country)
	g.ncountry.Store(int32(len(g.countries)))
	g.blockMu.Unlock()
}

// CountryBlocks lists the country blocks still in force.
func (g *Gateway) CountryBlocks() []CountryBlock {
	return inForce(g, g.countries, func(b CountryBlock) time.Time { return b.Until })
}

// countryBlocked reports whether d's source is in a blocked country. It
// looks the source up only while a country block is held, and keeps the
// lookup for the access event.
func (g *Gateway) countryBlocked(d *Decision, now time.Time) bool {
	if g.ncountry.Load() == 0 || !d.Source.IsValid() || len(g.geo.readers) == 0 {
		return false
	}
	d.country, d.asn = g.geo.lookup(d.Source)
	d.located = true
	if d.country == "" {
		return false
	}
	g.blockMu.RLock()
	b, ok := g.countries[d.country]
	g.blockMu.RUnlock()
	return ok && now.Before(b.Until)
}

// ClaimsFromContext returns the claims of the token the gateway verified for
// this request, for handlers behind [Gateway.Middleware].
func ClaimsFromContext(ctx context.Context) (token.Claims, bool) {
	d, ok := DecisionFromContext(ctx)
	if !ok || !d.Verified || d.Claims == nil {
		return token.Claims{}, false
	}
	return *d.Claims, true
}

// fail records a failed check; it reports whether the request is refused.
func (g *Gateway) fail(d *Decision, r event.Reason) bool {
	if g.cfg.Modes[r] == Observe {
		if d.observed == "" {
			d.observed = r
		}
		return false
	}
	d.deny = r
	return true
}

// Middleware runs the checks before next. Refused requests never reach
// next. An allowed request reaches next with the header rule applied, its
// path in canonical form and the identity headers set.
func (g *Gateway) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme := g.scheme(r) // before the header rule removes X-Forwarded-Proto
		g.stripClientHeaders(r.Header, g.trustedPeer(r.RemoteAddr))
		target := r.RequestURI
		if target == "" || target == "*" {
			target = r.URL.RequestURI()
		}
		var span trace.Span
		if tr := g.tracer.Load(); tr != nil {
			ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span = tr.Start(ctx, "gateway.request", trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", r.Method)))
			r = r.WithContext(ctx)
		}
		d := g.Decide(r.Context(), Request{Method: r.Method, Host: r.Host, Target: target, Header: r.Header, Peer: r.RemoteAddr,
			Scheme: scheme})
		if span != nil {
			span.SetAttributes(attribute.String("custos.verdict", string(d.Verdict)), attribute.String("custos.reason", string(d.Reason)))
			if d.Route != "" {
				span.SetAttributes(attribute.String("http.route", d.Route))
			}
			// The upstream continues this trace, whatever the client sent.
			r.Header.Del("Traceparent")
			r.Header.Del("Tracestate")
			traceContext.Inject(r.Context(), propagation.HeaderCarrier(r.Header))
			defer span.End()
		}

		if !d.Allowed() {
			g.dpopChallenge(w.Header(), d.Reason, d.useNonce)
			// A refusal's event is handed over before the answer: with a
			// publisher that stores it before returning (the scale-out
			// gateway's), no refusal is answered whose event could still
			// be lost with this process.
			g.Emit(d, Outcome{Status: http.StatusUnauthorized, Bytes: int64(len(refusalBodies[d.Reason]))})
			refuse(w, d.Reason)
			return
		}
		if d.Path != "" {
			// Next serves exactly the path that was checked.
			r.URL.Path, r.URL.RawPath = d.Path, d.Path
			r.RequestURI = r.URL.RequestURI()
		}
		g.SetIdentity(r.Header, d)
		r = r.WithContext(context.WithValue(r.Context(), decisionKey{}, d))
		rw := &recorder{ResponseWriter: w}
		t := time.Now()
		next.ServeHTTP(rw, r)
		upstream := time.Since(t)
		g.Emit(d, Outcome{Status: rw.status, Bytes: rw.bytes, Upstream: upstream})
	})
}

// check runs every check in order.
func (g *Gateway) check(ctx context.Context, r *Request, d *Decision) {
	now := d.now
	escaped, query, ok := splitTarget(r.Target)
	d.Query = query
	if len(escaped) > MaxPathBytes {
		d.rawPath = escaped[:MaxPathBytes]
	} else {
		d.rawPath = escaped
	}
	if ok {
		if p, canon := canonicalPath(escaped); canon {
			d.Path = p
		}
	}
	if d.Path != "" && len(g.routes) > 0 {
		if d.rt = g.match(r.Method, r.Host, d.Path, &d.u); d.rt != nil {
			d.routeSubj = routeSubject(d.rt, d.Path)
		}
	} else if d.Path == "" && ok && len(g.routes) == 0 {
		// No routes to match: the path is only cleaned, as ServeMux does.
		if p, err := url.PathUnescape(escaped); err == nil && strings.HasPrefix(p, "/") {
			d.Path = cleanPath(p)
		}
	}
	if (g.blocked(d.Source, now) || g.countryBlocked(d, now)) && g.fail(d, event.ReasonBlockedSource) {
		return
	}
	if len(g.routes) > 0 && d.rt == nil &&
		(d.Path == "" || g.cfg.Unmatched != Forward || g.lenientMatch(r.Host, d.Path)) &&
		g.fail(d, event.ReasonUnknownRoute) {
		return
	}
	raw, scheme, reason := bearer(r.Header)
	if reason != "" {
		g.fail(d, reason)
		return
	}
	var observe func(event.Reason) bool
	if len(g.cfg.Modes) > 0 {
		observe = func(r event.Reason) bool { return g.cfg.Modes[r] == Observe }
	}
	v := g.checker.Check(ctx, raw, &g.policy, now, observe)
	d.Claims, d.KID, d.Verified = v.Claims, v.KID, v.Verified
	if v.Cached {
		g.cacheHits.Inc()
	}
	if v.Observed != "" && d.observed == "" {
		d.observed = v.Observed
	}
	if v.Reason != "" {
		d.deny = v.Reason
		return
	}
	if d.Claims == nil {
		return // unreadable, and malformed is only observed
	}
	if g.checkBinding(ctx, r, d, raw, scheme, &v, escaped) {
		return
	}
	if _, ok := g.decoys[d.Claims.Subject]; ok && g.fail(d, event.ReasonDecoySubject) {
		return
	}
	if _, ok := g.decoys[d.routeSubj]; ok && d.routeSubj != "" && g.fail(d, event.ReasonDecoySubject) {
		return
	}
	if d.rt != nil && d.rt.seg >= 0 && (d.routeSubj != d.Claims.Subject || token.CheckSubject(d.routeSubj) != nil) && g.fail(d, event.ReasonSubjectMismatch) {
		return
	}
}

// bearer extracts the token and its scheme, Bearer (RFC 6750 section 2.1)
// or DPoP (RFC 9449 section 7.1), from the one Authorization header. Other
// ways of sending a token are not accepted.
func bearer(h http.Header) (string, string, event.Reason) {
	vals := h.Values("Authorization")
	if len(vals) == 0 {
		return "", "", event.ReasonMissingToken
	}
	if len(vals) > 1 {
		return "", "", event.ReasonMalformed
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "DPoP") {
		return "", "", event.ReasonMissingToken
	}
	if tok == "" {
		return "", "", event.ReasonMissingToken
	}
	return tok, scheme, ""
}

// scheme is the scheme the client used to reach the gateway: https over
// TLS, else what a trusted proxy says in X-Forwarded-Proto, else http.
func (g *Gateway) scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if p := forwardedProto(r.Header); p != "" && g.trustedPeer(r.RemoteAddr) {
		return p
	}
	return "http"
}

// source is the client address: the peer, or with trusted proxies the
// right-most X-Forwarded-For hop that is not a trusted proxy.
func (g *Gateway) source(peer string, h http.Header) netip.Addr {
	return g.trusted.Source(peer, h)
}

// trustedPeer reports whether the connection comes from a trusted proxy.
func (g *Gateway) trustedPeer(peer string) bool {
	return g.trusted.Trusted(peer)
}

var refusalBodies = func() map[event.Reason][]byte {
	m := map[event.Reason][]byte{}
	for _, r := range event.Reasons {
		b, _ := json.Marshal(map[string]string{"error": "invalid_token", "error_description": string(r)})
		m[r] = append(b, '\n')
	}
	return m
}()

// refuse writes the RFC 6750 refusal for reason.
func refuse(w http.ResponseWriter, reason event.Reason) {
	h := w.Header()
	if h.Get("WWW-Authenticate") == "" { // a DPoP challenge may be set already
		h.Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+string(reason)+`"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	body := refusalBodies[reason]
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(body)
}

// recorder notes what was sent to the client.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// emit builds the request's access event and sends it out.
func (g *Gateway) emit(d *Decision, o Outcome) {
	ev := event.Access{
		Time:        d.now.UTC(),
		Gateway:     g.cfg.GatewayName,
		RequestID:   g.requestID(),
		Method:      d.method,
		Route:       d.Route,
		Path:        d.Path,
		Status:      o.Status,
		Bytes:       o.Bytes,
		LatencyUS:   time.Since(d.start).Microseconds(),
		UserAgent:   d.userAgent,
		Verdict:     d.Verdict,
		Reason:      d.Reason,
		Subject:     d.Subject,
		DataClasses: d.DataClasses,
	}
	if ev.Status == 0 {
		ev.Status = http.StatusOK
	}
	if ev.Path == "" {
		ev.Path = d.rawPath
	}
	if d.Source.IsValid() {
		ev.SrcIP = d.Source.String()
		if d.located {
			ev.Country, ev.ASN = d.country, d.asn
		} else {
			ev.Country, ev.ASN = g.geo.lookup(d.Source)
		}
	}
	if c := d.Claims; c != nil {
		ev.Token = event.Token{JTI: c.JTI, KID: d.KID, Sub: c.Subject, Aud: c.Audience, IAT: c.IssuedAt, EXP: c.ExpiresAt}
	}
	g.requests.WithLabelValues(string(ev.Verdict), string(ev.Reason)).Inc()
	if g.pub != nil {
		g.pub.Publish(ev)
	}
	if g.evFile != nil {
		b, err := json.Marshal(ev)
		if err == nil {
			b = append(b, '\n')
			g.evMu.Lock()
			if g.evFile != nil {
				_, _ = g.evFile.Write(b)
			}
			g.evMu.Unlock()
		}
	}
}

func (g *Gateway) requestID() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], g.reqSeq.Add(1))
	return g.reqPrefix + hex.EncodeToString(b[:])
}
