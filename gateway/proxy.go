package gateway

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// NewProxy returns a reverse proxy to upstream behind g's checks. The
// upstream receives the canonical path the route was matched on (under
// upstream's own path, if it has one), the headers the header rule leaves,
// X-Forwarded-For, -Host and -Proto, and the identity headers
// (Config.SubjectHeader, X-Custos-Jti, X-Custos-Kid) set last.
func NewProxy(upstream *url.URL, g *Gateway) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			d, ok := DecisionFromContext(pr.In.Context())
			if !ok || !d.Allowed() {
				panic(http.ErrAbortHandler) // only decided, allowed requests come here
			}
			if d.Path != "" {
				pr.Out.URL.Path, pr.Out.URL.RawPath = d.Path, d.Path
			}
			pr.Out.URL.RawQuery = d.Query
			// Request trailers are headers the checks never saw, and may
			// name anything: none is forwarded.
			pr.Out.Trailer = nil
			pr.SetURL(upstream)
			if g.trustedPeer(pr.In.RemoteAddr) {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			// After the proxy's own hop-by-hop removal, so that no header the
			// client named in Connection can take them away.
			g.SetIdentity(pr.Out.Header, d)
		},
		Transport: &http.Transport{
			Proxy:               nil, // never send customer traffic through an environment proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		},
		BufferPool: &copyBuffers{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"bad_gateway","error_description":"upstream unavailable"}` + "\n"))
		},
	}
	return g.Middleware(rp)
}

// copyBuffers reuses the proxy's 32 KiB body-copy buffers, which
// httputil.ReverseProxy otherwise allocates for every request.
type copyBuffers struct{ p sync.Pool }

func (c *copyBuffers) Get() []byte {
	if b, ok := c.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}

func (c *copyBuffers) Put(b []byte) { c.p.Put(&b) }
