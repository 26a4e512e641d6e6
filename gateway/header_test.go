package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/event"
)

// view is the headers as one kind of upstream reads them: name → values.
type view map[string][]string

// Upstreams that normalise header names differently.
var headerReaders = map[string]func(http.Header) view{
	// Go: canonical names, as received.
	"go": func(h http.Header) view { return view(h.Clone()) },
	// Node: lower-case names, repeated ones joined.
	"node": func(h http.Header) view {
		v := view{}
		for k, vs := range h {
			n := strings.ToLower(k)
			v[n] = append(v[n], vs...)
		}
		return v
	},
	// WSGI (PEP 3333) and CGI (RFC 3875): HTTP_ + upper case, '-' as '_'.
	"wsgi": func(h http.Header) view {
		v := view{}
		for k, vs := range h {
			n := "HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
			v[n] = append(v[n], vs...)
		}
		return v
	},
}

// identityName is the name of an identity or address header as each
// reader spells it.
func identityName(reader, canonical string) string {
	switch reader {
	case "node":
		return strings.ToLower(canonical)
	case "wsgi", "cgi":
		return "HTTP_" + strings.ToUpper(strings.ReplaceAll(canonical, "-", "_"))
	}
	return canonical
}

// spoofs are client headers that try to pass as the gateway's identity
// headers, the client's address, or another path or method.
var spoofs = [][]string{
	{"X-Custos-Subject", "1021"}, {"x-custos-subject", "1021"}, {"X-CUSTOS-SUBJECT", "1021"},
	{"X_Custos_Subject", "1021"}, {"x_custos_subject", "1021"}, {"X-Custos_Subject", "1021"}, {"X_CUSTOS-SUBJECT", "1021"},
	{"X-Custos-Jti", "evil"}, {"X_Custos_Jti", "evil"}, {"x-custos-kid", "evil"}, {"X_CUSTOS_KID", "evil"},
	{"X-Custos-Role", "admin"}, {"X_Custos_Anything", "evil"},
	{"X-Real-IP", "6.6.6.6"}, {"X_Real_IP", "6.6.6.6"}, {"x-real-ip", "6.6.6.6"},
	{"True-Client-IP", "6.6.6.6"}, {"True_Client_IP", "6.6.6.6"}, {"CF-Connecting-IP", "6.6.6.6"},
	{"Cf_Connecting_Ip", "6.6.6.6"}, {"X-Client-IP", "6.6.6.6"}, {"X_Client_IP", "6.6.6.6"},
	{"X-Cluster-Client-IP", "6.6.6.6"}, {"Fastly-Client-IP", "6.6.6.6"}, {"Forwarded", "for=6.6.6.6;proto=https"},
	{"X-Forwarded-For", "6.6.6.6"}, {"X_Forwarded_For", "6.6.6.6"}, {"x-forwarded-for", "6.6.6.6, 6.6.6.6"},
	{"X-Forwarded-Host", "6.6.6.6"}, {"X_Forwarded_Host", "6.6.6.6"},
	{"X-Original-URL", "/api/members/1021/profile"}, {"X-Rewrite-URL", "/api/members/1021/profile"},
	{"X_Original_URL", "/api/members/1021/profile"}, {"X-HTTP-Method-Override", "DELETE"},
}

// proxyWithReaders runs the proxy in front of a Go upstream that records
// the headers it receives, and a CGI upstream (net/http/cgi running a shell
// script that prints its environment).
type headerEnv struct {
	*proxyEnv
	mu     sync.Mutex
	cgiEnv []string
}

func newHeaderEnv(t *testing.T, cfg Config, useCGI bool) *headerEnv {
	t.Helper()
	h := &headerEnv{}
	var up func(http.ResponseWriter, *http.Request)
	if useCGI {
		sh, err := os.Stat("/bin/sh")
		if err != nil || sh.IsDir() {
			t.Skip("no /bin/sh for the CGI upstream")
		}
		script := filepath.Join(t.TempDir(), "env.cgi")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		ch := &cgi.Handler{Path: script}
		up = func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			ch.ServeHTTP(rec, r)
			h.mu.Lock()
			h.cgiEnv = strings.Split(rec.Body.String(), "\n")
			h.mu.Unlock()
			w.WriteHeader(rec.Code)
		}
	}
	h.proxyEnv = newProxyEnv(t, cfg, up)
	return h
}

// cgiView is the CGI script's environment: name → value (one each).
func (h *headerEnv) cgiView() view {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := view{}
	for _, l := range h.cgiEnv {
		if k, val, ok := strings.Cut(l, "="); ok {
			v[k] = append(v[k], val)
		}
	}
	return v
}

// checkView asserts what an upstream reads: exactly the verified identity,
// the gateway's own client address, and none of the client's spoofs.
func checkView(t *testing.T, reader string, v view, sub, jti, peer string) {
	t.Helper()
	for name, want := range map[string]string{
		"X-Custos-Subject": sub, "X-Custos-Jti": jti, "X-Custos-Kid": "k1",
	} {
		if got := v[identityName(reader, name)]; len(got) != 1 || got[0] != want {
			t.Errorf("%s reads %s = %q, want exactly %q", reader, name, got, want)
		}
	}
	if got := v[identityName(reader, "X-Forwarded-For")]; len(got) != 1 || got[0] != peer {
		t.Errorf("%s reads X-Forwarded-For %q, want %q", reader, got, peer)
	}
	for k, vs := range v {
		for _, s := range vs {
			if strings.Contains(s, "6.6.6.6") || strings.Contains(s, "1021") || s == "evil" || s == "admin" || s == "DELETE" {
				t.Errorf("%s reads client-sent %s: %q", reader, k, s)
			}
		}
		f := foldName(strings.TrimPrefix(strings.TrimPrefix(k, "HTTP_"), "http_"))
		if f == "x-real-ip" || f == "true-client-ip" || f == "forwarded" || f == "x-original-url" {
			t.Errorf("%s reads %s: %q", reader, k, vs)
		}
	}
}

// The header rule, against upstreams that read header names as Go, Node,
// WSGI and CGI do: one spoof at a time, all of them at once, and each
// identity header named in Connection to make the proxy drop the
// gateway's own.
func TestHeadersNeverSpoofed(t *testing.T) {
	for _, useCGI := range []bool{false, true} {
		name := "go-node-wsgi"
		if useCGI {
			name = "cgi"
		}
		t.Run(name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Routes = routeTestRoutes()
			h := newHeaderEnv(t, cfg, useCGI)
			c := claimsFor("1020")
			tok := h.issue(t, c)
			var cases [][]string
			for _, s := range spoofs {
				cases = append(cases, s)
			}
			var all []string
			for _, s := range spoofs {
				all = append(all, s...)
			}
			cases = append(cases, all)
			for _, conn := range []string{"X-Custos-Subject", "x-custos-subject, X-Custos-Jti, X-Custos-Kid",
				"X_Custos_Subject", "keep-alive, X-CUSTOS-SUBJECT", "X-Forwarded-For", "Authorization-Not, X-Custos-Kid"} {
				cases = append(cases, []string{"Connection", conn})
				cases = append(cases, append([]string{"Connection", conn}, all...))
			}
			for _, hdr := range cases {
				before := h.count()
				args := append([]string{"Authorization", "Bearer " + tok}, hdr...)
				st, reason := h.raw(t, "GET", "/api/members/1020/profile", args...)
				got, reached := h.since(before)
				if st != 200 || !reached {
					t.Fatalf("%q: %d %q", hdr, st, reason)
				}
				if useCGI {
					checkView(t, "cgi", h.cgiView(), "1020", c.JTI, "127.0.0.1")
					continue
				}
				for reader, read := range headerReaders {
					checkView(t, reader, read(got.header), "1020", c.JTI, "127.0.0.1")
				}
				if ev := h.pub.last(t); ev.SrcIP != "127.0.0.1" {
					t.Errorf("%q: event src_ip %q", hdr, ev.SrcIP)
				}
			}
		})
	}
}

// A refused request gives the upstream nothing, and an identity header
// sent with no token is no identity.
func TestHeadersNoTokenNoIdentity(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	h := newHeaderEnv(t, cfg, false)
	for _, s := range spoofs[:7] {
		before := h.count()
		if st, reason := h.raw(t, "GET", "/api/members/1021/profile", s...); st != 401 || reason != string(event.ReasonMissingToken) {
			t.Errorf("%q: %d %q", s, st, reason)
		}
		if _, reached := h.since(before); reached {
			t.Errorf("%q reached the upstream", s)
		}
	}
}

// From a trusted proxy, X-Forwarded-For names the client and is extended;
// underscore spellings and the other address headers are still removed.
func TestHeadersTrustedProxy(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	h := newHeaderEnv(t, cfg, false)
	c := claimsFor("1020")
	tok := h.issue(t, c)
	st, _ := h.raw(t, "GET", "/api/members/1020/profile", "Authorization", "Bearer "+tok,
		"X-Forwarded-For", "203.0.113.9", "X_Forwarded_For", "6.6.6.6", "X-Real-IP", "6.6.6.6", "True-Client-IP", "6.6.6.6")
	got, reached := h.since(0)
	if st != 200 || !reached {
		t.Fatalf("status %d", st)
	}
	for reader, read := range headerReaders {
		v := read(got.header)
		xff := v[identityName(reader, "X-Forwarded-For")]
		if !slices.Equal(xff, []string{"203.0.113.9, 127.0.0.1"}) {
			t.Errorf("%s reads X-Forwarded-For %q", reader, xff)
		}
		for k, vs := range v {
			if strings.Contains(strings.Join(vs, ","), "6.6.6.6") {
				t.Errorf("%s reads %s %q", reader, k, vs)
			}
		}
	}
	if ev := h.pub.last(t); ev.SrcIP != "203.0.113.9" {
		t.Errorf("event src_ip %q", ev.SrcIP)
	}
}

// The middleware applies the same rule for a Go handler behind it.
func TestHeadersMiddleware(t *testing.T) {
	e := newEnv(t, testConfig())
	tok := e.issue(t, claimsFor("m-1"))
	for _, conn := range []string{"X-Custos-Subject", "x_custos_subject", "X-Custos-Jti"} {
		args := []string{"Connection", conn, "X_Custos_Subject", "m-2", "X-Real-IP", "6.6.6.6", "X-Custos-Subject", "m-2"}
		if w := e.do("GET", addr, tok, args...); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		hdr := e.lastHdr.Load().(http.Header)
		if got := hdr.Values("X-Custos-Subject"); !slices.Equal(got, []string{"m-1"}) {
			t.Errorf("Connection %q: subject %q", conn, got)
		}
		if hdr.Get("X-Custos-Jti") != "jti-m-1" || hdr.Get("X-Custos-Kid") != "k1" {
			t.Errorf("Connection %q: jti %q kid %q", conn, hdr.Get("X-Custos-Jti"), hdr.Get("X-Custos-Kid"))
		}
		for k := range hdr {
			if f := foldName(k); f == "x-real-ip" || (strings.HasPrefix(f, "x-custos-") && k != "X-Custos-Subject" && k != "X-Custos-Jti" && k != "X-Custos-Kid") {
				t.Errorf("Connection %q: handler reads %s", conn, k)
			}
		}
	}
}

// A trailer of a chunked request body can name any header; none reaches
// the upstream.
func TestHeadersRequestTrailersDropped(t *testing.T) {
	cfg := testConfig()
	cfg.Routes = routeTestRoutes()
	var trailer http.Header
	var body string
	p := newProxyEnv(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body, trailer = string(b), r.Trailer.Clone()
	})
	tok := p.issue(t, claimsFor("1020"))
	c, err := net.Dial("tcp", p.front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/members/1020/profile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Transfer-Encoding: chunked\r\nTrailer: X-Custos-Subject, X_Custos_Subject, X-Real-IP\r\nConnection: close\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Custos-Subject: 1021\r\nX_Custos_Subject: 1021\r\nX-Real-IP: 6.6.6.6\r\n\r\n", tok)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if len(trailer) != 0 {
		t.Errorf("upstream received trailers %v", trailer)
	}
}
