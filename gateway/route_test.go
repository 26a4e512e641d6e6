package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// routeTestRoutes look like a shop's member API.
func routeTestRoutes() []Route {
	return []Route{
		{Pattern: "GET /api/members/{memberId}", DataClasses: []string{event.ClassName}, SubjectParam: "memberId"},
		{Pattern: "GET /api/members/{memberId}/profile", DataClasses: []string{event.ClassName, event.ClassEmail}, SubjectParam: "memberId"},
		{Pattern: "GET /api/members/{memberId}/addresses", DataClasses: []string{event.ClassAddress}, SubjectParam: "memberId"},
		{Pattern: "GET /api/members/{memberId}/orders/{orderId}", DataClasses: []string{event.ClassOrderHistory}, SubjectParam: "memberId"},
		{Pattern: "GET /api/catalog"},
		{Pattern: "GET /static/"},
	}
}

// seen is what the upstream received.
type seen struct {
	requestURI string
	header     http.Header
}

// proxyEnv is the real reverse proxy in front of a recording upstream.
type proxyEnv struct {
	*env
	front string // host:port of the proxy
	mu    sync.Mutex
	got   []seen
}

func newProxyEnv(t *testing.T, cfg Config, upstream func(http.ResponseWriter, *http.Request)) *proxyEnv {
	t.Helper()
	p := &proxyEnv{env: newEnv(t, cfg)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.got = append(p.got, seen{r.RequestURI, r.Header.Clone()})
		p.mu.Unlock()
		if upstream != nil {
			upstream(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	front := httptest.NewServer(NewProxy(u, p.g))
	t.Cleanup(front.Close)
	p.front = strings.TrimPrefix(front.URL, "http://")
	return p
}

// last returns what the upstream received last, if it received anything
// since n requests.
func (p *proxyEnv) since(n int) (seen, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.got) == n {
		return seen{}, false
	}
	return p.got[len(p.got)-1], true
}

func (p *proxyEnv) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

// raw sends one request exactly as written (request line and headers) and
// returns the status and refusal reason. Status 400 means the HTTP server
// itself would not read the request.
func (p *proxyEnv) raw(t *testing.T, method, target string, hdr ...string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.front, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, p.front)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	var body struct {
		Desc string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Desc
}

// Upstream routers a shop may run, each given the forwarded request
// target; they answer the route they would serve and its member, ok false
// when they serve none.
type upstreamRouter struct {
	name  string
	route func(target string) (pattern, member string, ok bool)
}

func upstreamRouters(routes []Route) []upstreamRouter {
	mux := http.NewServeMux()
	subj := map[string]string{}
	for _, r := range routes {
		p := r.Pattern
		mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
		subj[p] = r.SubjectParam
	}
	goMux := func(target string) (string, string, bool) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: up\r\n\r\n")))
		if err != nil {
			return "", "", false
		}
		_, pat := mux.Handler(req)
		if pat == "" {
			return "", "", false
		}
		// ServeMux fills path values only when serving; match again by hand.
		if p := subj[pat]; p != "" {
			var member string
			mux2 := http.NewServeMux()
			mux2.HandleFunc(pat, func(_ http.ResponseWriter, r *http.Request) { member = r.PathValue(p) })
			mux2.ServeHTTP(httptest.NewRecorder(), req)
			return pat, member, true
		}
		return pat, "", true
	}
	// A forgiving router (Express, Rails, Tomcat, Flask with strict_slashes
	// off): decodes the whole path first (%2F is a slash), takes '\' as '/',
	// drops ';' parameters and trailing white space, folds letter case,
	// collapses slashes and dot segments and ignores a trailing slash.
	lenient := func(target string) (string, string, bool) {
		p, _, _ := strings.Cut(target, "?")
		if u, err := url.Parse(p); err == nil && u.Host != "" {
			p = u.EscapedPath()
		}
		if d, err := url.PathUnescape(p); err == nil {
			p = d
		}
		p = strings.ReplaceAll(p, "\\", "/")
		segs := strings.Split(p, "/")
		for i, s := range segs {
			s, _, _ = strings.Cut(s, ";")
			segs[i] = strings.TrimRight(s, " \t\x00")
		}
		p = path.Clean("/" + strings.Join(segs, "/"))
		have := strings.Split(strings.Trim(p, "/"), "/")
		for _, r := range routes {
			pat := r.Pattern[strings.IndexByte(r.Pattern, '/'):]
			if strings.HasSuffix(pat, "/") {
				if strings.HasPrefix(strings.ToLower(p)+"/", strings.ToLower(pat)) {
					return r.Pattern, "", true
				}
				continue
			}
			want := strings.Split(strings.Trim(pat, "/"), "/")
			if len(want) != len(have) {
				continue
			}
			member, ok := "", true
			for i, w := range want {
				switch {
				case w == "{"+r.SubjectParam+"}":
					member = have[i]
				case strings.HasPrefix(w, "{"):
				case !strings.EqualFold(w, have[i]):
					ok = false
				}
			}
			if ok {
				return r.Pattern, member, true
			}
		}
		return "", "", false
	}
	return []upstreamRouter{{"go-servemux", goMux}, {"lenient", lenient}}
}

// attackTargets are request targets by which member 1020 might reach
// member 1021's data.
var attackTargets = []string{
	// trailing slash, dot and empty segments
	"/api/members/1021/", "/api/members/1021/profile/", "/api/members/1021/profile/.",
	"/api/members/1021/./profile", "/api//members/1021/profile", "//api/members/1021/profile",
	"/api/members/1020/../1021/profile", "/api/members/1020/%2e%2e/1021/profile",
	"/api/members/1020/%2E%2E/1021", "/api/members/1020/.%2e/1021/addresses",
	"/api/members/1021/profile/..", "/api/members/x/../../members/1021",
	// ';' path parameters
	"/api/members/1021;x=1/profile", "/api/members/1021/profile;jsessionid=1", "/api/members;a/1021",
	"/api/members/1021;", "/api/members/1020;/../1021/profile", "/api/members/1021%3B/profile",
	// letter case
	"/API/members/1021/profile", "/api/Members/1021", "/api/members/1021/PROFILE", "/Api/Members/1021/Addresses/",
	// encoded slash and backslash
	"/api/members/1021%2Fprofile", "/api/members/1021%2fprofile", "/api%2Fmembers%2F1021",
	"/api/members/1020%2F..%2F1021/profile", "/api/members/1021%5Cprofile", "/api/members/1021%5cprofile",
	"/api/members/1021\\profile", "/api\\members\\1021",
	// other percent-encodings
	"/api/members/%31%30%32%31/profile", "/api/members/1021%2F", "/api/members/%2531021/profile",
	"/api/members/1021%00/profile", "/api/members/1021%00", "/api/members/1021%0a",
	"/api/members/1021%C0%AFprofile", "/api/members/1021%c0%ae%c0%ae/profile", "/api/members/1021%E2%80%AE",
	"/api/members/1021%", "/api/members/1021%2", "/api/members/1021%zz",
	// trailing or encoded white space
	"/api/members/1021%20", "/api/members/1021/profile%20", "/api/members/1021%09/profile",
	"/api/members/1021+/profile",
	// unlisted sub-paths and neighbours
	"/api/members/1021/profile/extra", "/api/members/1021/profile.json", "/api/members/1021/orders",
	"/api/members/1021/orders/9/items", "/api/members", "/api/members/", "/api/members-1021",
	// query, fragment, absolute form, overlong
	"/api/members/1021/profile?memberId=1020", "/api/members/1021?x=/api/members/1020",
	"http://upstream.test/api/members/1021/profile",
	"/static/../api/members/1021", "/static/%2e%2e/api/members/1021",
}

// The attack seen in the field: member 1020's real token reads member
// 1021's data through a path an upstream router takes for 1021's route. Each
// variant is sent byte for byte through the reverse proxy to a recording
// upstream. Whatever the gateway does, the upstream never serves another
// member than the token's, it receives exactly the path the gateway checked,
// and the access event names the member read.
func TestRoutesCanonicalPath(t *testing.T) {
	for _, mode := range []Unmatched{Deny, Forward} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig()
			cfg.Routes = routeTestRoutes()
			cfg.Unmatched = mode
			p := newProxyEnv(t, cfg, nil)
			tok := p.issue(t, claimsFor("1020"))
			routers := upstreamRouters(cfg.Routes)
			long := "/api/members/1021/profile" + strings.Repeat("/.", MaxPathBytes)
			for _, target := range append(attackTargets, long) {
				before := p.count()
				st, reason := p.raw(t, "GET", target, "Authorization", "Bearer "+tok)
				got, reached := p.since(before)
				if st == http.StatusBadRequest && !reached {
					continue // the HTTP server itself refused to read it
				}
				if !reached {
					if st != http.StatusUnauthorized || (reason != string(event.ReasonUnknownRoute) && reason != string(event.ReasonSubjectMismatch)) {
						t.Errorf("%q: %d %q", target, st, reason)
					}
					ev := p.pub.last(t)
					if reason == string(event.ReasonSubjectMismatch) && (!strings.HasPrefix(ev.Subject, "1021") || ev.Route == "") {
						t.Errorf("%q: refused event names subject %q route %q, want the member asked for", target, ev.Subject, ev.Route)
					}
					continue
				}
				ev := p.pub.last(t)
				gotPath, _, _ := strings.Cut(got.requestURI, "?")
				if gotPath != ev.Path {
					t.Errorf("%q: upstream received %q, gateway checked %q", target, gotPath, ev.Path)
				}
				if ev.Subject != "1020" {
					t.Errorf("%q: event subject %q", target, ev.Subject)
				}
				for _, r := range routers {
					if pat, member, ok := r.route(got.requestURI); ok && member != "" && member != "1020" {
						t.Errorf("%q: %s serves %s for member %q; gateway checked route %q", target, r.name, pat, member, ev.Route)
					}
					if pat, _, ok := r.route(got.requestURI); ok && r.name == "go-servemux" && pat != ev.Route {
						t.Errorf("%q: upstream routes %q, gateway checked %q", target, pat, ev.Route)
					}
				}
				if mode == Deny && ev.Route == "" {
					t.Errorf("%q: forwarded with no route in deny mode", target)
				}
			}
		})
	}
}

// The same paths for one's own member: the ones with a canonical form are
// allowed and the upstream receives exactly that form; the rest are refused
// as unknown_route.
func TestRoutesUpstreamReceivesCanonicalPath(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	p := newProxyEnv(t, cfg, nil)
	tok := p.issue(t, claimsFor("1020"))
	for _, tc := range []struct{ target, want string }{
		{"/api/members/1020/profile", "/api/members/1020/profile"},
		{"/api/members/%31%30%32%30/profile", "/api/members/1020/profile"},
		{"/api/members/1020/%70rofile", "/api/members/1020/profile"},
		{"/api/./members/1020/profile", "/api/members/1020/profile"},
		{"/api//members///1020/profile", "/api/members/1020/profile"},
		{"/api/members/1021/../1020/profile", "/api/members/1020/profile"},
		{"/x/../api/members/1020", "/api/members/1020"},
		{"/api/members/1020/orders/7?page=2&sort=-date", "/api/members/1020/orders/7?page=2&sort=-date"},
		{"/api/members/1020/orders/a!$&'()*+,=:@~_.-", "/api/members/1020/orders/a!$&'()*+,=:@~_.-"},
		{"/static/app.js", "/static/app.js"},
		{"/static/a/%2e%2e/b.css", "/static/b.css"},
		{"http://elsewhere.test/api/catalog?q=1", "/api/catalog?q=1"},
		{"/api/members/1020/profile/", ""},
		{"/API/MEMBERS/1020/PROFILE", ""},
		{"/api/members/1020;v=2/profile", ""},
		{"/api/members/1020%2Fprofile", ""},
		{"/api/members/1020%20", ""},
		{"/api/members/1020/unlisted", ""},
		{"/api/members/1020/..", ""}, // /api/members: no route
		{"/", ""},
	} {
		before := p.count()
		st, reason := p.raw(t, "GET", tc.target, "Authorization", "Bearer "+tok)
		got, reached := p.since(before)
		if tc.want == "" {
			if reached || st != 401 || reason != string(event.ReasonUnknownRoute) {
				t.Errorf("%q: %d %q reached=%v, want unknown_route", tc.target, st, reason, reached)
			}
			continue
		}
		if !reached || st != 200 {
			t.Errorf("%q: %d %q, want it forwarded", tc.target, st, reason)
			continue
		}
		if got.requestURI != tc.want {
			t.Errorf("%q: upstream received %q, want %q", tc.target, got.requestURI, tc.want)
		}
		if ev := p.pub.last(t); ev.Subject != "1020" && strings.HasPrefix(tc.want, "/api/members") {
			t.Errorf("%q: event subject %q", tc.target, ev.Subject)
		}
	}
}

// Every method is bound on a route's path, not only the one it names.
func TestRoutesOtherMethodsBound(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	p := newProxyEnv(t, cfg, nil)
	tok := p.issue(t, claimsFor("1020"))
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "FOO"} {
		before := p.count()
		st, reason := p.raw(t, m, "/api/members/1021/profile", "Authorization", "Bearer "+tok)
		if _, reached := p.since(before); reached || st == 200 {
			t.Errorf("%s: %d %q reached upstream", m, st, reason)
		}
	}
}

// Unmatched paths are refused without a token too, and in forward mode a
// path that a case-folding or slash-tolerant router would serve from a
// route is refused although the gateway's own match fails.
func TestRoutesUnmatched(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	p := newProxyEnv(t, cfg, nil)
	for _, target := range []string{"/admin", "/api/members/1020/profile/", "/api/catalog/"} {
		if st, reason := p.raw(t, "GET", target); st != 401 || reason != string(event.ReasonUnknownRoute) {
			t.Errorf("deny %q: %d %q", target, st, reason)
		}
	}
	cfg.Unmatched = Forward
	p = newProxyEnv(t, cfg, nil)
	tok := p.issue(t, claimsFor("1020"))
	for target, want := range map[string]int{
		"/admin":                      200,
		"/api/members/1021/profile/":  401,
		"/API/members/1021":           401,
		"/api/CATALOG":                401,
		"/api/members/1021/Profile/":  401,
		"/api/members/1021/other":     200, // no route, no router here serves it as one
		"/api/members/1021%2Fprofile": 401, // no canonical form
	} {
		if st, _ := p.raw(t, "GET", target, "Authorization", "Bearer "+tok); st != want {
			t.Errorf("forward %q: %d, want %d", target, st, want)
		}
	}
}

// With no routes the gateway warns at start, and forwards the cleaned path.
func TestRoutesNone(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = nil
	p := newProxyEnv(t, cfg, nil)
	if w := p.g.Warnings(); len(w) == 0 || !strings.Contains(w[0], "no routes") {
		t.Fatalf("warnings %q", w)
	}
	tok := p.issue(t, claimsFor("1020"))
	if st, _ := p.raw(t, "GET", "/anything/./at/../all", "Authorization", "Bearer "+tok); st != 200 {
		t.Fatalf("status %d", st)
	}
	if got, _ := p.since(0); got.requestURI != "/anything/all" {
		t.Errorf("upstream received %q", got.requestURI)
	}
	cfg.Routes = routeTestRoutes()
	if g, err := New(cfg, p.ks, p.led, nil, nil); err != nil || len(g.Warnings()) != 0 {
		t.Errorf("warnings with routes: %v %v", g.Warnings(), err)
	}
}

// Bad unmatched values are refused at start, naming the field.
func TestRoutesConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Unmatched = "allow"
	if _, err := New(cfg, &fakeKeys{}, &fakeLedger{}, nil, nil); err == nil || !strings.Contains(err.Error(), "unmatched") {
		t.Fatalf("err %v", err)
	}
}

// unknown_route in observe mode lets the request through unbound and the
// event says what enforcing would have done.
func TestRoutesUnknownRouteObserved(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	cfg.Modes = map[event.Reason]Mode{event.ReasonUnknownRoute: Observe}
	p := newProxyEnv(t, cfg, nil)
	tok := p.issue(t, claimsFor("1020"))
	st, _ := p.raw(t, "GET", "/api/members/1021/profile/", "Authorization", "Bearer "+tok)
	got, reached := p.since(0)
	if st != 200 || !reached || got.requestURI != "/api/members/1021/profile/" {
		t.Fatalf("%d reached=%v %q", st, reached, got.requestURI)
	}
	if ev := p.pub.last(t); ev.Verdict != event.Allow || ev.Reason != event.ReasonUnknownRoute || ev.Route != "" {
		t.Errorf("event %s %s route %q", ev.Verdict, ev.Reason, ev.Route)
	}
	// Observing routes does not observe the token checks.
	if st, reason := p.raw(t, "GET", "/api/members/1021/profile", "Authorization", "Bearer nope.nope.nope"); st != 401 || reason != string(event.ReasonMalformed) {
		t.Errorf("bad token on an observed route: %d %q", st, reason)
	}
}

// Behind the middleware, a Go handler serves exactly the canonical path:
// URL.Path, the escaped path and RequestURI agree with the event.
func TestRoutesMiddlewareServesCanonical(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	e := newEnv(t, cfg)
	var got []string
	h := e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = []string{r.URL.Path, r.URL.EscapedPath(), r.RequestURI}
	}))
	tok := e.issue(t, claimsFor("1020"))
	for target, want := range map[string]string{
		"/api/members/%31%30%32%30/./profile":    "/api/members/1020/profile",
		"/api//members/1021/../1020/profile?a=b": "/api/members/1020/profile",
		"/static/%7Euser/../x":                   "/static/x",
	} {
		got = nil
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(httptest.NewRecorder(), r)
		_, q, _ := strings.Cut(target, "?")
		wantURI := want
		if q != "" {
			wantURI += "?" + q
		}
		if len(got) != 3 || got[0] != want || got[1] != want || got[2] != wantURI {
			t.Errorf("%q: handler saw %q, want %q", target, got, want)
		}
		if ev := e.pub.last(t); ev.Path != want {
			t.Errorf("%q: event path %q", target, ev.Path)
		}
	}
}

// When a member's data is served under another member's token (subject
// binding observed only), the access event names the member read, so
// breach scoping finds that member; the token's subject stays in token.sub.
func TestRoutesEventNamesMemberRead(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	cfg.Modes = map[event.Reason]Mode{event.ReasonSubjectMismatch: Observe}
	p := newProxyEnv(t, cfg, nil)
	tok := p.issue(t, claimsFor("1020"))
	for _, target := range []string{"/api/members/1021/profile", "/api/members/%31%30%32%31/./profile", "/api/members/1020/../1021/addresses"} {
		if st, _ := p.raw(t, "GET", target, "Authorization", "Bearer "+tok); st != 200 {
			t.Fatalf("%q: %d", target, st)
		}
		ev := p.pub.last(t)
		if ev.Subject != "1021" || ev.Token.Sub != "1020" || ev.Reason != event.ReasonSubjectMismatch || len(ev.DataClasses) == 0 {
			t.Errorf("%q: subject %q token.sub %q reason %q classes %v", target, ev.Subject, ev.Token.Sub, ev.Reason, ev.DataClasses)
		}
	}
}
