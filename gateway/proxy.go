package gateway

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// NewProxy returns a reverse proxy to upstream behind g's checks. The
// upstream receives the verified subject in Config.SubjectHeader.
func NewProxy(upstream *url.URL, g *Gateway) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			Proxy:               nil, // never send customer traffic through an environment proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"bad_gateway","error_description":"upstream unavailable"}` + "\n"))
		},
	}
	return g.Middleware(rp)
}
