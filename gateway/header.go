package gateway

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
)

// Identity headers the gateway gives the upstream, besides
// Config.SubjectHeader (X-Custos-Subject by default).
const (
	HeaderJTI = "X-Custos-Jti"
	HeaderKID = "X-Custos-Kid"
)

// Header rule
//
// Upstreams read header names in several spellings: Go canonicalises them,
// Node lowercases them, CGI and WSGI turn X-Custos-Subject into
// HTTP_X_CUSTOS_SUBJECT, so X_Custos_Subject reads the same there. A client
// header is compared in that folded form (lower case, '_' as '-'), and
// removed when an upstream could take it for an identity header, for the
// client's address, or for the path or method it serves. Headers the client
// names in Connection are hop-by-hop and removed too. The identity headers
// are set only after all of that ([Gateway.SetIdentity]).

var custosPrefix = []byte("x-custos-")

// spoofable are folded names no client may send upstream.
var spoofable = map[string]bool{
	// The client's address.
	"x-real-ip": true, "true-client-ip": true, "cf-connecting-ip": true, "x-client-ip": true,
	"x-cluster-client-ip": true, "fastly-client-ip": true, "x-originating-ip": true,
	"x-remote-ip": true, "x-remote-addr": true, "client-ip": true, "forwarded": true,
	"x-forwarded": true, "forwarded-for": true, "x-forwarded-for": true,
	"x-original-forwarded-for": true, "x-forwarded-host": true, "x-forwarded-proto": true,
	"x-forwarded-port": true, "x-forwarded-server": true, "x-host": true,
	// Another path or method than the one checked.
	"x-original-url": true, "x-rewrite-url": true, "x-original-uri": true,
	"x-forwarded-uri": true, "x-forwarded-path": true, "x-forwarded-prefix": true,
	"x-original-method": true, "x-forwarded-method": true,
	"x-http-method-override": true, "x-http-method": true, "x-method-override": true,
}

// hopByHop are hop-by-hop headers removed here; Connection, Upgrade, TE and
// Trailer are left to the reverse proxy, which needs them to forward an
// upgrade or trailers and removes them itself.
var hopByHop = []string{"Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization"}

// foldName is a header name as an upstream that folds case and '_' reads it.
func foldName(k string) string {
	var buf [64]byte
	return string(foldInto(buf[:0], k))
}

// foldInto appends k folded to b.
func foldInto(b []byte, k string) []byte {
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		b = append(b, c)
	}
	return b
}

// stripClientHeaders applies the header rule to the headers of a request
// from peer (trusted: a configured proxy, whose canonical X-Forwarded-For is
// kept for the reverse proxy to extend).
func (g *Gateway) stripClientHeaders(h http.Header, trusted bool) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			name = textproto.TrimString(name)
			switch foldName(name) {
			case "", "connection", "upgrade", "te":
				continue // the reverse proxy handles these itself
			}
			{
				for k := range h {
					if foldName(k) == foldName(name) {
						delete(h, k)
					}
				}
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
	var buf [64]byte
	for k := range h {
		f := foldInto(buf[:0], k)
		switch {
		case bytes.HasPrefix(f, custosPrefix), string(f) == g.subjFolded:
			delete(h, k)
		case trusted && k == "X-Forwarded-For":
		case spoofable[string(f)]:
			delete(h, k)
		}
	}
}
