package examples

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
)

// recShop is the sample shop, recording the headers of every request that
// reaches it by User-Agent (each test request has its own).
type recShop struct {
	mu   sync.Mutex
	seen map[string][]http.Header
	h    http.Handler
}

func (s *recShop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen[r.UserAgent()] = append(s.seen[r.UserAgent()], r.Header.Clone())
	s.mu.Unlock()
	s.h.ServeHTTP(w, r)
}

func (s *recShop) got(ua string) []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[ua]
}

// stack is custos (authority and a `custos gateway --decide` following it
// over HTTP) and the sample shop, for a proxy to sit in front of.
type stack struct {
	e        *servertest.Env
	secret   string
	shop     *recShop
	shopAddr string
	decide   string // the decision API's address
	events   string // its events file
}

func freeAddr(t *testing.T) string { return proctest.FreeAddr(t) }

func startStack(t *testing.T, name string) *stack {
	t.Helper()
	sh, err := shop.New(servertest.DefaultPopulation)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{shop: &recShop{seen: map[string][]http.Header{}, h: sh}}
	up := httptest.NewServer(s.shop)
	t.Cleanup(up.Close)
	s.shopAddr = up.Listener.Addr().String()
	s.e = servertest.Start(t, servertest.DefaultPopulation, func(c *config.Config) { c.Gateway.Upstream = up.URL })
	s.secret = s.e.Client(t)

	cfg := s.e.Cfg
	cfg.Gateway.Upstream = ""
	cfg.Gateway.Decide = true
	cfg.Gateway.Listen = freeAddr(t)
	cfg.Gateway.Authority = s.e.APIURL
	cfg.Gateway.Name = name
	s.events = filepath.Join(t.TempDir(), "events.jsonl")
	cfg.Gateway.EventsFile = s.events
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.RunGateway(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("decision API stopped with %v", err)
		}
	})
	servertest.WaitListening(t, cfg.Gateway.Listen)
	s.decide = cfg.Gateway.Listen
	return s
}

// template writes an example configuration with its addresses replaced.
func (s *stack) template(t *testing.T, src, front string, extra ...string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(append([]string{"127.0.0.1:8080", s.shopAddr, "127.0.0.1:7780", s.decide, "127.0.0.1:8000", front}, extra...)...)
	out := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(out, []byte(r.Replace(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// rawGet sends one HTTP/1.1 request with target exactly as given.
func rawGet(t *testing.T, addr, method, target, ua string, hdr ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: %s\r\nConnection: close\r\n", method, target, ua)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// eventsOf reads the decision API's events of one request (by User-Agent).
func (s *stack) eventsOf(t *testing.T, ua string) []event.Access {
	t.Helper()
	b, err := os.ReadFile(s.events)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []event.Access
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev event.Access
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		if ev.UserAgent == ua {
			out = append(out, ev)
		}
	}
	return out
}

// attack sends the scenario's requests through a proxy at front and checks
// each answer, what reached the shop and the one access event.
func (s *stack) attack(t *testing.T, front, proxy string) {
	m1, m2 := s.e.Member(1), s.e.Member(2)
	good := s.e.Issue(t, s.secret, m1)
	forged := s.e.Forge(t, m1, "forged-"+proxy)
	revoked := s.e.Issue(t, s.secret, m1)
	own := "/api/members/" + m1 + "/addresses"
	n := 0
	try := func(name, target, tok string, want event.Reason, hdr ...string) {
		t.Helper()
		n++
		ua := fmt.Sprintf("%s-test-%d", proxy, n)
		if tok != "" {
			hdr = append(hdr, "Authorization", "Bearer "+tok)
		}
		resp, body := rawGet(t, front, "GET", target, ua, hdr...)
		upstream := s.shop.got(ua)
		evs := s.eventsOf(t, ua)
		if len(evs) != 1 {
			t.Errorf("%s: %d access events for one request, want 1", name, len(evs))
		}
		if want == "" {
			if resp.StatusCode != 200 || len(upstream) != 1 {
				t.Errorf("%s: status %d, %d upstream requests, want 200 and 1 (%s)", name, resp.StatusCode, len(upstream), body)
				return
			}
			h := upstream[0]
			if got := h.Values("X-Custos-Subject"); len(got) != 1 || got[0] != m1 {
				t.Errorf("%s: upstream X-Custos-Subject %q, want [%s]", name, got, m1)
			}
			if h.Get("X-Custos-Kid") == "" || h.Get("X-Custos-Jti") == "" {
				t.Errorf("%s: upstream identity headers %v", name, h)
			}
			if len(evs) == 1 && (evs[0].Verdict != event.Allow || evs[0].Subject != m1 || evs[0].Route == "") {
				t.Errorf("%s: event %+v", name, evs[0])
			}
			return
		}
		code := http.StatusUnauthorized
		if resp.StatusCode != code || len(upstream) != 0 {
			t.Errorf("%s: status %d, %d upstream requests, want %d and none (%s)", name, resp.StatusCode, len(upstream), code, body)
		}
		if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: WWW-Authenticate %q", name, resp.Header.Get("WWW-Authenticate"))
		}
		if got := resp.Header.Get("X-Custos-Reason"); got != string(want) {
			t.Errorf("%s: X-Custos-Reason %q, want %q", name, got, want)
		}
		if len(evs) == 1 && (evs[0].Verdict != event.Deny || evs[0].Reason != want) {
			t.Errorf("%s: event verdict=%s reason=%s, want deny %s", name, evs[0].Verdict, evs[0].Reason, want)
		}
	}
	try("issued token, own data", own, good, "")
	try("issued token, own data, query", own+"?page=1", good, "")
	try("spoofed identity header", own, good, "", "X-Custos-Subject", m2)
	s.spoofedAddress(t, front, proxy, own, good, &n)
	try("stolen key (not issued)", own, forged, event.ReasonNotIssued)
	try("subject mismatch", "/api/members/"+m2+"/addresses", good, event.ReasonSubjectMismatch)
	try("subject mismatch, other route", "/api/members/"+m2+"/orders", good, event.ReasonSubjectMismatch)
	try("missing token", own, "", event.ReasonMissingToken)
	try("basic credentials", own, "", event.ReasonMissingToken, "Authorization", "Basic bTE6cHc=")
	try("unknown route", "/api/admin/export", good, event.ReasonUnknownRoute)
	// A client naming another URI: nginx overwrites its X-Original-URI and
	// drops its X-Forwarded-Uri, so custos sees the real one; Caddy passes
	// the client's X-Original-URI on next to its own X-Forwarded-Uri, and
	// custos refuses the disagreement.
	spoofed := event.ReasonSubjectMismatch
	if proxy == "caddy" {
		spoofed = event.ReasonMalformed
	}
	try("spoofed original URI", "/api/members/"+m2+"/addresses", good, spoofed, "X-Original-URI", own, "X-Forwarded-Uri", own, "X-Original-Method", "GET")
	for _, p := range []string{
		"/api/members/" + m2 + "/../" + m1 + "/addresses",
		"/api/members/" + m2 + "/%2e%2e/" + m1 + "/addresses",
		"/api/members//" + m1 + "/addresses",
		"/api/members/" + m1 + "/./addresses",
		"/api/members/" + m1 + "%2Faddresses",
		"/api/members/%3" + m1[:1] + m1[1:] + "/addresses",
		"/API/members/" + m1 + "/addresses",
	} {
		n++
		ua := fmt.Sprintf("%s-test-%d", proxy, n)
		resp, _ := rawGet(t, front, "GET", p, ua, "Authorization", "Bearer "+good)
		if resp.StatusCode == 200 || len(s.shop.got(ua)) != 0 {
			t.Errorf("path variant %s: status %d, reached the shop %d times", p, resp.StatusCode, len(s.shop.got(ua)))
		}
		// A proxy may refuse a path itself (400) before asking custos;
		// when it asks, custos refuses and records it once.
		evs := s.eventsOf(t, ua)
		if len(evs) == 1 {
			t.Logf("%s: %s refused %d by custos: %s", proxy, p, resp.StatusCode, evs[0].Reason)
		} else {
			t.Logf("%s: %s refused %d by the proxy itself", proxy, p, resp.StatusCode)
		}
		if len(evs) > 1 || len(evs) == 1 && evs[0].Verdict != event.Deny {
			t.Errorf("path variant %s: events %+v", p, evs)
		} else if len(evs) == 0 && resp.StatusCode != 400 {
			t.Errorf("path variant %s: refused %d without asking custos", p, resp.StatusCode)
		}
	}

	// Revocation reaches the decision API through the ledger stream, within
	// a second.
	try("before revocation", own, revoked, "")
	if err := s.e.API.DoAuth(context.Background(), "POST", "/v1/tokens/revoke", s.secret, map[string]string{"token": revoked}, nil); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for {
		n++
		ua := fmt.Sprintf("%s-test-%d", proxy, n)
		resp, _ := rawGet(t, front, "GET", own, ua, "Authorization", "Bearer "+revoked)
		if resp.StatusCode == 401 {
			if len(s.shop.got(ua)) != 0 {
				t.Error("revoked: the shop saw the refused request")
			}
			if evs := s.eventsOf(t, ua); len(evs) != 1 || evs[0].Reason != event.ReasonRevokedToken {
				t.Errorf("revoked: events %+v", evs)
			}
			break
		}
		if time.Since(at) > time.Second {
			t.Fatal("a revoked token still passes after 1 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: token revocation reached the decision API in %s", proxy, time.Since(at).Round(time.Millisecond))
}

// spoofedAddress sends an allowed request naming another client address in
// every header an API might read it from, in several spellings: the shop
// never sees the client's value, and custos records the real peer.
func (s *stack) spoofedAddress(t *testing.T, front, proxy, path, tok string, n *int) {
	t.Helper()
	const fake = "203.0.113.66"
	for _, names := range [][]string{
		{"X-Real-IP", "True-Client-IP", "CF-Connecting-IP", "X-Forwarded-For", "X-Client-IP", "X-Cluster-Client-IP", "Fastly-Client-IP"},
		{"x-real-ip", "true-client-ip", "cf-connecting-ip", "x-forwarded-for", "x-client-ip"},
		{"X_Real_IP", "True_Client_IP", "CF_Connecting_IP", "X_Forwarded_For"},
	} {
		*n++
		ua := fmt.Sprintf("%s-test-%d", proxy, *n)
		hdr := []string{"Authorization", "Bearer " + tok, "Forwarded", "for=" + fake}
		for _, h := range names {
			hdr = append(hdr, h, fake)
		}
		resp, body := rawGet(t, front, "GET", path, ua, hdr...)
		up := s.shop.got(ua)
		if resp.StatusCode != 200 || len(up) != 1 {
			t.Errorf("spoofed address %v: status %d, %d upstream requests (%s)", names, resp.StatusCode, len(up), body)
			continue
		}
		for k, vs := range up[0] {
			for _, v := range vs {
				if strings.Contains(v, fake) {
					t.Errorf("%s: the shop received the client's %s: %q", proxy, k, v)
				}
			}
		}
		if evs := s.eventsOf(t, ua); len(evs) == 1 && evs[0].SrcIP == fake {
			t.Errorf("%s: custos recorded the client's claimed address", proxy)
		}
	}
}

func TestNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	testenv.Require(t, "nginx (Debian package nginx)", err)
	s := startStack(t, "edge-nginx")
	front := freeAddr(t)
	dir := t.TempDir()
	conf := s.template(t, "nginx/nginx.conf", front, "worker_processes auto;", "worker_processes 1;")
	proctest.StartGroup(t, nil, bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"),
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	servertest.WaitListening(t, front)
	s.attack(t, front, "nginx")
}

func TestCaddy(t *testing.T) {
	bin, err := exec.LookPath("caddy")
	testenv.Require(t, "caddy (Debian package caddy)", err)
	s := startStack(t, "edge-caddy")
	front := freeAddr(t)
	home := t.TempDir()
	_, port, _ := net.SplitHostPort(front)
	conf := s.template(t, "caddy/Caddyfile", front, "http://:8000", "http://:"+port)
	proctest.StartGroup(t, []string{"HOME=" + home, "XDG_DATA_HOME=" + home, "XDG_CONFIG_HOME=" + home},
		bin, "run", "--config", conf, "--adapter", "caddyfile")
	servertest.WaitListening(t, front)
	s.attack(t, front, "caddy")
}
