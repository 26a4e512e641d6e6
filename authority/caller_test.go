package authority

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/clientaddr"
)

type callerRec struct {
	mu      sync.Mutex
	callers []string
}

func (c *callerRec) Issued(ctx context.Context, _ *Client, _ *Request, _, _ string, _ time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.callers = append(c.callers, CallerOf(ctx))
}

func (c *callerRec) last(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.callers) == 0 {
		t.Fatal("nothing issued")
	}
	return c.callers[len(c.callers)-1]
}

// The token endpoints' caller is the peer, or behind a trusted proxy the
// right-most X-Forwarded-For hop no trusted proxy owns; Forwarded and
// X-Real-IP are never read.
func TestCallerBehindTrustedProxies(t *testing.T) {
	f := newFixture(t)
	rec := &callerRec{}
	f.auth.Issuances = rec
	proxies, err := clientaddr.Parse([]string{"10.0.0.0/8", "2001:db8:1::/48"})
	if err != nil {
		t.Fatal(err)
	}
	behind, direct := http.NewServeMux(), http.NewServeMux()
	(&Handler{Auth: f.auth, Creds: f.creds, Proxies: proxies}).Register(behind)
	(&Handler{Auth: f.auth, Creds: f.creds}).Register(direct)

	endpoints := map[string]func(peer string, h http.Header) *http.Request{
		"v1": func(peer string, h http.Header) *http.Request {
			r := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(`{"subject":"1001","audience":"shop-api"}`))
			r.Header = h
			r.Header.Set("Authorization", "Bearer "+f.secret)
			r.RemoteAddr = peer
			return r
		},
		"oauth2": func(peer string, h http.Header) *http.Request {
			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {f.client.ID}, "client_secret": {f.secret}}
			r := httptest.NewRequest("POST", TokenPath, strings.NewReader(form.Encode()))
			r.Header = h
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.RemoteAddr = peer
			return r
		},
	}
	xff := func(lines ...string) http.Header {
		h := http.Header{}
		for _, l := range lines {
			h.Add("X-Forwarded-For", l)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		mux  *http.ServeMux
		peer string
		h    http.Header
		want string
	}{
		{"no proxies configured: the peer, XFF ignored", direct, "10.0.0.1:4000", xff("203.0.113.9"), "10.0.0.1"},
		{"untrusted peer: XFF ignored", behind, "198.51.100.4:4000", xff("203.0.113.9"), "198.51.100.4"},
		{"trusted proxy: the client", behind, "10.0.0.1:4000", xff("203.0.113.9"), "203.0.113.9"},
		{"spoofed left-most hop: right-most untrusted wins", behind, "10.0.0.1:4000",
			xff("192.0.2.66, 203.0.113.9"), "203.0.113.9"},
		{"chain of trusted proxies", behind, "10.0.0.1:4000",
			xff("192.0.2.66, 203.0.113.9, 10.2.0.1, 10.3.0.1"), "203.0.113.9"},
		{"several header lines", behind, "10.0.0.1:4000", xff("192.0.2.66", "203.0.113.9, 10.2.0.1"), "203.0.113.9"},
		{"spaces and an empty hop", behind, "10.0.0.1:4000", xff("192.0.2.66 ,, 10.2.0.1 "), "10.2.0.1"},
		{"garbage hop", behind, "10.0.0.1:4000", xff("192.0.2.66, not-an-ip"), "10.0.0.1"},
		{"IPv4-mapped hop", behind, "10.0.0.1:4000", xff("::ffff:203.0.113.9"), "203.0.113.9"},
		{"IPv4-mapped peer", behind, "[::ffff:10.0.0.1]:4000", xff("203.0.113.9"), "203.0.113.9"},
		{"IPv6 proxy", behind, "[2001:db8:1::2]:4000", xff("2001:db8:99::7"), "2001:db8:99::7"},
		{"Forwarded not read", behind, "10.0.0.1:4000", http.Header{"Forwarded": {"for=203.0.113.9"}}, "10.0.0.1"},
		{"X-Real-IP not read", behind, "10.0.0.1:4000", http.Header{"X-Real-Ip": {"203.0.113.9"}}, "10.0.0.1"},
	} {
		for ep, mk := range endpoints {
			t.Run(tc.name+"/"+ep, func(t *testing.T) {
				w := httptest.NewRecorder()
				tc.mux.ServeHTTP(w, mk(tc.peer, tc.h.Clone()))
				if w.Code != http.StatusOK {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				if got := rec.last(t); got != tc.want {
					t.Errorf("caller %q, want %q", got, tc.want)
				}
			})
		}
	}
}
