package gateway

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// MaxPathBytes bounds the request path the gateway matches against routes;
// a longer one matches none.
const MaxPathBytes = 2048

// Canonical path
//
// Routes are matched on one canonical form of the path, and the upstream
// receives exactly that form (the proxy rewrites the outgoing path), so a
// request cannot be checked as one path and served as another. The form is:
// percent-encodings of unreserved characters (RFC 3986 section 2.3) decoded,
// dot segments resolved and repeated slashes collapsed (path.Clean, keeping
// a trailing slash, as ServeMux does). A path that would need anything else
// to be read one way has no canonical form and matches no route: one with a
// percent-encoding of any other byte (an encoded slash or backslash, %00,
// %20, %25, %3B, overlong UTF-8), a raw byte outside RFC 3986's pchar, a ';'
// path parameter, or more than MaxPathBytes. Letter case and a trailing
// slash are kept: /API/members/1 and /api/members/1/ are other paths than
// /api/members/1 and match only a route written that way.

// canonicalPath returns the canonical form of an escaped path, or ok false
// when it has none.
func canonicalPath(escaped string) (string, bool) {
	if escaped == "" || escaped[0] != '/' || len(escaped) > MaxPathBytes {
		return "", false
	}
	var b []byte // nil while escaped needs no decoding
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '%':
			if i+2 >= len(escaped) {
				return "", false
			}
			hi, ok1 := unhex(escaped[i+1])
			lo, ok2 := unhex(escaped[i+2])
			v := hi<<4 | lo
			if !ok1 || !ok2 || !unreserved(v) {
				return "", false
			}
			if b == nil {
				b = append(make([]byte, 0, len(escaped)), escaped[:i]...)
			}
			b = append(b, v)
			i += 2
		case pathByte(c):
			if b != nil {
				b = append(b, c)
			}
		default:
			return "", false
		}
	}
	p := escaped
	if b != nil {
		p = string(b)
	}
	return cleanPath(p), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// pathByte reports the bytes a canonical path may hold: RFC 3986 pchar
// without pct-encoded and ';', plus '/'. Every one of them is sent as is by
// net/url and read as itself by every router.
func pathByte(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '/', '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@':
		return true
	}
	return false
}

// cleanPath is path.Clean keeping a trailing slash, as ServeMux does.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// splitTarget splits a request target into its escaped path and raw query.
// An absolute-form target ("http://host/p?q") gives its path.
func splitTarget(target string) (escapedPath, query string, ok bool) {
	if target == "" {
		return "", "", false
	}
	if target[0] != '/' {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Opaque != "" {
			return "", "", false
		}
		return u.EscapedPath(), u.RawQuery, true
	}
	escapedPath, query, _ = strings.Cut(target, "?")
	if i := strings.IndexByte(escapedPath, '#'); i >= 0 {
		return "", "", false
	}
	return escapedPath, query, true
}

// routeHandler marks a registered route in the mux, so that a match is
// told apart from the mux's own redirects.
type routeHandler struct{ rt *route }

func (routeHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

// match finds the route of a canonical path; u is scratch space.
func (g *Gateway) match(method, host, canonical string, u *url.URL) *route {
	*u = url.URL{Path: canonical}
	req := http.Request{Method: method, Host: host, URL: u}
	h, _ := g.mux.Handler(&req)
	if rh, ok := h.(routeHandler); ok {
		return rh.rt
	}
	return nil
}

// addLenient registers pattern, method-less and in lower case, in the
// lenient mux. Patterns that fold to the same form keep the first.
func (g *Gateway) addLenient(pattern string, rt *route) {
	if i := strings.IndexAny(pattern, " \t"); i >= 0 && !strings.HasPrefix(pattern, "/") {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	defer func() { _ = recover() }() // a folded duplicate
	g.lenient.Handle(strings.ToLower(pattern), routeHandler{rt})
}

// lenientMatch reports whether a router that folds letter case and ignores
// a trailing slash would serve a canonical path from one of the routes. A
// forwarded unmatched path must not be one: it would be served as a route
// without having been checked as one.
func (g *Gateway) lenientMatch(host, canonical string) bool {
	p := strings.ToLower(canonical)
	for _, q := range []string{p, strings.TrimRight(p, "/")} {
		if q == "" {
			continue
		}
		req := http.Request{Method: http.MethodGet, Host: strings.ToLower(host), URL: &url.URL{Path: q}}
		if h, _ := g.lenient.Handler(&req); h != nil {
			if _, ok := h.(routeHandler); ok {
				return true
			}
		}
	}
	return false
}

// routeSubject reads the subject wildcard's value from a canonical path.
func routeSubject(rt *route, p string) string {
	if rt.seg < 0 {
		return ""
	}
	rest := strings.TrimPrefix(p, "/")
	for i := 0; i < rt.seg; i++ {
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return ""
		}
		rest = rest[j+1:]
	}
	if !rt.rest {
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			rest = rest[:j]
		}
	}
	return rest
}
