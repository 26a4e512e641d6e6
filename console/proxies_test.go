package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/internal/clientaddr"
)

// loginAudit records the console.login entries, then appends them.
type loginAudit struct {
	console.Audit
	mu   sync.Mutex
	recs []map[string]string
}

func (a *loginAudit) Append(ctx context.Context, kind string, v any) error {
	if m, ok := v.(map[string]string); ok && kind == "console.login" {
		a.mu.Lock()
		a.recs = append(a.recs, m)
		a.mu.Unlock()
	}
	return a.Audit.Append(ctx, kind, v)
}

// A console login through a trusted proxy records the client address it
// forwarded next to the peer; through any other peer, only the peer.
func TestConsoleLoginBehindProxy(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name    string
		proxies []string
		want    string // client_addr, "" for none
	}{
		{"trusted", []string{"127.0.0.1/32"}, "203.0.113.9"},
		{"untrusted", []string{"10.0.0.0/8"}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxies, err := clientaddr.Parse(tc.proxies)
			if err != nil {
				t.Fatal(err)
			}
			au := &loginAudit{Audit: e.s.Audit}
			c, err := console.New(console.Config{Keys: e.s.Keys, Staff: e.s.Staff, Credentials: e.s.Creds, Detect: e.s.Detect,
				Audit: au, Proxies: proxies})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(c)
			defer srv.Close()
			hc := newClient(t)
			tok := csrfOf(t, hc, srv.URL+"/console/login")
			req, _ := http.NewRequest("POST", srv.URL+"/console/login",
				strings.NewReader(url.Values{"csrf": {tok}, "token": {e.adminToken}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Forwarded-For", "198.51.100.7, 203.0.113.9")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body(t, resp)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login: %d", resp.StatusCode)
			}
			au.mu.Lock()
			defer au.mu.Unlock()
			if len(au.recs) != 1 {
				t.Fatalf("%d console.login entries", len(au.recs))
			}
			r := au.recs[0]
			if got, ok := r["client_addr"]; got != tc.want || ok != (tc.want != "") {
				t.Errorf("client_addr %q (present %v), want %q", got, ok, tc.want)
			}
			if r["src"] == "" || r["staff_id"] == "" || r["admin_credential"] == "" {
				t.Errorf("entry %v", r)
			}
		})
	}
}
