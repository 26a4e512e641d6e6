package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/keys"
)

func TestConsoleHTTP(t *testing.T) {
	e := start(t)
	ctx := context.Background()

	t.Run("ok/csp_on_every_response", func(t *testing.T) {
		for _, p := range []string{"/console/login", "/console/keys", "/console/static/console.js", "/console/nope"} {
			resp, err := newClient(t).Get(e.apiURL + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Content-Security-Policy"); got != console.CSP {
				t.Errorf("%s: CSP %q", p, got)
			}
			if !strings.Contains(console.CSP, "script-src 'self'") || strings.Contains(console.CSP, "unsafe") {
				t.Fatalf("CSP is not strict: %s", console.CSP)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: no nosniff", p)
			}
		}
	})

	t.Run("ok/no_inline_script_or_style", func(t *testing.T) {
		c := newClient(t)
		e.login(t, c)
		for _, p := range []string{"/console/overview", "/console/keys", "/console/staff", "/console/alerts", "/console/incidents", "/console/keys/rotate"} {
			resp, err := c.Get(e.apiURL + p)
			if err != nil {
				t.Fatal(err)
			}
			b := body(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", p, resp.StatusCode, b)
			}
			for _, bad := range []string{"<script>", "<style", " style=", " onclick=", " onload=", "javascript:"} {
				if strings.Contains(b, bad) {
					t.Errorf("%s contains %q", p, bad)
				}
			}
		}
	})

	t.Run("fail/unauthenticated_redirects_to_login", func(t *testing.T) {
		for _, p := range []string{"/console/overview", "/console/keys", "/console/incidents/x/notification.csv"} {
			resp, err := newClient(t).Get(e.apiURL + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?next=") {
				t.Errorf("%s: %d %q", p, resp.StatusCode, loc)
			}
		}
	})

	t.Run("fail/bad_admin_token", func(t *testing.T) {
		c := newClient(t)
		tok := csrfOf(t, c, e.apiURL+"/console/login")
		resp, err := c.PostForm(e.apiURL+"/console/login", url.Values{"csrf": {tok}, "token": {"not-a-token"}})
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, ck := range c.Jar.Cookies(mustURL(e.apiURL + "/console/")) {
			if ck.Name == console.SessionCookie {
				t.Fatal("a failed login made a session")
			}
		}
	})

	t.Run("fail/login_without_csrf", func(t *testing.T) {
		c := newClient(t)
		csrfOf(t, c, e.apiURL+"/console/login")
		resp, err := c.PostForm(e.apiURL+"/console/login", url.Values{"token": {e.adminToken}})
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})

	t.Run("ok/session_cookie_is_httponly_strict", func(t *testing.T) {
		c := newClient(t)
		tok := csrfOf(t, c, e.apiURL+"/console/login")
		resp, err := c.PostForm(e.apiURL+"/console/login", url.Values{"csrf": {tok}, "token": {e.adminToken}})
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		var found bool
		for _, ck := range resp.Cookies() {
			if ck.Name == console.SessionCookie && ck.Value != "" {
				found = true
				if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Value == e.adminToken {
					t.Fatalf("session cookie %+v", ck)
				}
			}
		}
		if !found {
			t.Fatal("no session cookie")
		}
	})

	rotateWith := func(t *testing.T, c *http.Client, form url.Values, hdr map[string]string) int {
		req, _ := http.NewRequest("POST", e.apiURL+"/console/keys/rotate", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		return resp.StatusCode
	}
	activeKID := func(t *testing.T) string {
		ks, err := e.s.Keys.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if k.State == keys.Active {
				return k.KID
			}
		}
		return ""
	}

	t.Run("fail/csrf_refused", func(t *testing.T) {
		c := newClient(t)
		csrf := e.login(t, c)
		before := activeKID(t)
		for name, tc := range map[string]struct {
			form url.Values
			hdr  map[string]string
		}{
			"no_token":    {url.Values{"reason": {"x"}, "confirm": {"yes"}}, nil},
			"wrong_token": {url.Values{"reason": {"x"}, "confirm": {"yes"}, "csrf": {csrf[:len(csrf)-2] + "AA"}}, nil},
			"cross_site":  {url.Values{"reason": {"x"}, "confirm": {"yes"}, "csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		} {
			if st := rotateWith(t, c, tc.form, tc.hdr); st != http.StatusForbidden {
				t.Errorf("%s: status %d, want 403", name, st)
			}
		}
		if after := activeKID(t); after != before {
			t.Fatalf("a refused POST rotated the key: %s → %s", before, after)
		}
	})

	t.Run("ok/rotate_with_csrf_is_attributed", func(t *testing.T) {
		c := newClient(t)
		csrf := e.login(t, c)
		before := activeKID(t)
		if st := rotateWith(t, c, url.Values{"reason": {"test"}, "confirm": {"yes"}}, map[string]string{console.CSRFHeader: csrf}); st != http.StatusSeeOther {
			t.Fatalf("status %d", st)
		}
		after := activeKID(t)
		if after == before {
			t.Fatal("key not rotated")
		}
		h, err := e.s.Keys.History(ctx, after)
		if err != nil || len(h) == 0 {
			t.Fatal(h, err)
		}
		if h[0].Actor == "" || h[0].Actor == keys.ActorSchedule || !strings.Contains(h[0].Reason, "test") {
			t.Fatalf("change not attributed to the session's staff id: %+v", h[0])
		}
	})

	t.Run("fail/rotate_needs_confirmation", func(t *testing.T) {
		c := newClient(t)
		csrf := e.login(t, c)
		before := activeKID(t)
		if st := rotateWith(t, c, url.Values{"reason": {"x"}, "csrf": {csrf}}, nil); st != http.StatusBadRequest {
			t.Fatalf("status %d", st)
		}
		if activeKID(t) != before {
			t.Fatal("rotated without confirmation")
		}
	})

	t.Run("ok/logout_ends_session", func(t *testing.T) {
		c := newClient(t)
		csrf := e.login(t, c)
		resp, err := c.PostForm(e.apiURL+"/console/logout", url.Values{"csrf": {csrf}})
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		resp, err = c.Get(e.apiURL + "/console/keys")
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("after logout: %d", resp.StatusCode)
		}
	})
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestSessionsExpire(t *testing.T) {
	now := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	s := console.NewSessions(func() time.Time { return now })
	id, _, _ := s.Create("staff-1", "adm-1")
	for _, tc := range []struct {
		name    string
		advance time.Duration
		ok      bool
	}{
		{"ok/fresh", 0, true},
		{"ok/within_idle", console.SessionIdle - time.Second, true},
		{"fail/idle_expired", console.SessionIdle + time.Second, false},
		{"fail/stays_expired", 0, false},
	} {
		now = now.Add(tc.advance)
		if _, ok := s.Lookup(id); ok != tc.ok {
			t.Fatalf("%s: lookup %v, want %v", tc.name, ok, tc.ok)
		}
	}
	id2, _, _ := s.Create("staff-2", "adm-2")
	if n := s.EndFor("staff-2"); n != 1 {
		t.Fatalf("EndFor ended %d", n)
	}
	if _, ok := s.Lookup(id2); ok {
		t.Fatal("session survived EndFor")
	}
}
