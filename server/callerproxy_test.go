package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
)

// callers records the caller of every issuance, then hands it on.
type callers struct {
	next authority.IssuanceRecorder
	mu   sync.Mutex
	seen []string
}

func (c *callers) Issued(ctx context.Context, cl *authority.Client, r *authority.Request, jti, kid string, at time.Time) {
	c.mu.Lock()
	c.seen = append(c.seen, authority.CallerOf(ctx))
	c.mu.Unlock()
	c.next.Issued(ctx, cl, r, jti, kid, at)
}

func (c *callers) last(t *testing.T) string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		t.Fatal("nothing issued")
	}
	return c.seen[len(c.seen)-1]
}

// proxied is a custos whose API sits behind a real nginx or Caddy on loopback.
type proxied struct {
	s       *server.Server
	callers *callers
	api     string // the API, directly
	front   string // the proxy
	id      string
	secret  string
}

func startProxied(t *testing.T, proxy string, trusted []string) *proxied {
	t.Helper()
	bin, err := exec.LookPath(proxy)
	testenv.Require(t, proxy+" (Debian package "+proxy+")", err)
	ln, gw := servertest.Listen(t), servertest.Listen(t)
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	cfg.Issuer = "http://" + ln.Addr().String()
	cfg.TrustedProxies = trusted
	shop.Configure(&cfg, servertest.DefaultPopulation, "http://127.0.0.1:1")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &proxied{s: s, callers: &callers{next: s.Authority.Issuances}, api: ln.Addr().String()}
	s.Authority.Issuances = p.callers // before Run: no request is served yet
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, gw) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	c, sec, err := s.Creds.AddClient(ctx, "login", []string{config.DefaultAudience}, "")
	if err != nil {
		t.Fatal(err)
	}
	p.id, p.secret = c.ID, sec

	p.front = proctest.FreeAddr(t)
	dir := t.TempDir()
	tmp := func(n string) string { return filepath.Join(dir, n) }
	var args, env []string
	switch proxy {
	case "nginx":
		// nginx appends the address it saw to the client's list.
		writeFile(t, tmp("nginx.conf"), fmt.Sprintf(`worker_processes 1;
events {}
http {
    access_log off;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    server {
        listen %s;
        location / {
            proxy_pass http://%s;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
`, tmp("body"), tmp("proxy"), tmp("fastcgi"), tmp("uwsgi"), tmp("scgi"), p.front, p.api))
		args = []string{"-p", dir, "-c", tmp("nginx.conf"), "-e", tmp("error.log"), "-g", "daemon off; pid " + tmp("nginx.pid") + ";"}
	case "caddy":
		// Caddy, trusting no proxy of its own, replaces the client's list
		// with the address it saw.
		_, port, _ := net.SplitHostPort(p.front)
		writeFile(t, tmp("Caddyfile"), fmt.Sprintf(`{
	admin off
	auto_https off
}
http://:%s {
	bind 127.0.0.1
	reverse_proxy %s
}
`, port, p.api))
		args = []string{"run", "--config", tmp("Caddyfile"), "--adapter", "caddyfile"}
		env = []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	default:
		t.Fatalf("unknown proxy %s", proxy)
	}
	proctest.StartGroup(t, env, bin, args...)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(tmp("error.log"))
			t.Logf("%s error log:\n%s", proxy, b)
		}
	})
	servertest.WaitListening(t, p.front)
	return p
}

func writeFile(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue asks for a token at addr (the proxy or the API) over a connection from
// the loopback address from, with extra headers, through both endpoints in
// turn, and returns the caller the authority recorded.
func (p *proxied) issue(t *testing.T, addr, from string, i int, hdr ...string) string {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}
	defer tr.CloseIdleConnections()
	var req *http.Request
	if i%2 == 0 {
		req, _ = http.NewRequest("POST", "http://"+addr+"/v1/tokens",
			strings.NewReader(fmt.Sprintf(`{"subject":"%d","audience":%q}`, 1000+i, config.DefaultAudience)))
		req.Header.Set("Authorization", "Bearer "+p.secret)
		req.Header.Set("Content-Type", "application/json")
	} else {
		req, _ = http.NewRequest("POST", "http://"+addr+authority.TokenPath,
			strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "client_id": {p.id}, "client_secret": {p.secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for j := 0; j+1 < len(hdr); j += 2 {
		req.Header.Add(hdr[j], hdr[j+1])
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || out.AccessToken == "" {
		t.Fatalf("issue from %s via %s: %d %v %s", from, addr, resp.StatusCode, err, b)
	}
	return p.callers.last(t)
}

// networkAlerts are the issuance_network alerts' src_ip attributes, and
// how many issuances they counted in all.
func (p *proxied) networkAlerts() (src []string, count int64) {
	for _, a := range p.s.Detect.Alerts() {
		if a.Rule == detect.RuleIssuanceNetwork {
			src = append(src, a.Attrs["src_ip"])
			count += a.Count
		}
	}
	return src, count
}

// The authority sees its real callers behind the shop's proxy (a real nginx
// and a real Caddy on loopback): with the proxy trusted, the issuance's
// caller is the client's own address and a stolen secret used from a new
// network raises issuance_network naming it; a caller reaching the
// authority directly is its own address whatever X-Forwarded-For it sends.
// With no proxy trusted, every caller through the proxy is the proxy.
func TestCallerBehindProxy(t *testing.T) {
	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) { callerBehind(t, proxy) })
	}
}

func callerBehind(t *testing.T, proxy string) {
	const (
		home     = "127.1.2.3" // the client's usual network
		attacker = "127.9.9.9" // a stolen secret used from elsewhere
		direct   = "127.5.5.5" // around the proxy
	)
	// Every other issuance is client_credentials, whose subject is the
	// client itself and which issuance detection leaves out.
	history := 2 * (int(detect.DefaultIssuanceHistoryMin) + 1)

	t.Run("trusted", func(t *testing.T) {
		p := startProxied(t, proxy, []string{"127.0.0.1/32"})
		for i := range history {
			// A client-sent X-Forwarded-For is kept on the left (nginx) or
			// dropped (Caddy); the right-most hop, the proxy's own view, wins.
			if got := p.issue(t, p.front, home, i, "X-Forwarded-For", "198.51.100.7"); got != home {
				t.Fatalf("issuance %d through %s from %s: caller %s", i, proxy, home, got)
			}
		}
		if a, _ := p.networkAlerts(); len(a) != 0 {
			t.Fatalf("issuance_network from the client's own network: %v", a)
		}
		if got := p.issue(t, p.front, attacker, 0); got != attacker {
			t.Fatalf("through %s from %s: caller %s", proxy, attacker, got)
		}
		if a, n := p.networkAlerts(); len(a) != 1 || a[0] != attacker || n != 1 {
			t.Fatalf("issuance_network src_ip %v (%d), want [%s] once", a, n, attacker)
		}
		// Directly, claiming the client's usual network: its own address.
		if got := p.issue(t, p.api, direct, 2, "X-Forwarded-For", home); got != direct {
			t.Fatalf("direct from %s with a forged X-Forwarded-For: caller %s", direct, got)
		}
		// The forged hop is not believed: a third network, counted by the
		// client's alert.
		if a, n := p.networkAlerts(); len(a) != 1 || n != 2 {
			t.Fatalf("issuance_network src_ip %v counted %d, want the client's alert counting 2", a, n)
		}
	})

	t.Run("empty", func(t *testing.T) {
		p := startProxied(t, proxy, nil)
		for i := range history {
			if got := p.issue(t, p.front, home, i, "X-Forwarded-For", "198.51.100.7"); got != "127.0.0.1" {
				t.Fatalf("issuance %d through %s, no proxy trusted: caller %s, want the proxy's 127.0.0.1", i, proxy, got)
			}
		}
		if got := p.issue(t, p.front, attacker, 0); got != "127.0.0.1" {
			t.Fatalf("through %s from %s, no proxy trusted: caller %s", proxy, attacker, got)
		}
		if a, _ := p.networkAlerts(); len(a) != 0 {
			t.Fatalf("issuance_network %v: behind an untrusted proxy every caller is the proxy", a)
		}
		// The history is the proxy's network; a caller around it is new.
		if got := p.issue(t, p.api, direct, 2, "X-Forwarded-For", home); got != direct {
			t.Fatalf("direct from %s with a forged X-Forwarded-For: caller %s", direct, got)
		}
		if a, n := p.networkAlerts(); len(a) != 1 || a[0] != direct || n != 1 {
			t.Fatalf("issuance_network src_ip %v (%d), want [%s] once", a, n, direct)
		}
	})
}
