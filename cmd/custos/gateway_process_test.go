package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/proctest"
)

// lockedBuffer collects a process's output.
type lockedBuffer = proctest.Output

func freeAddr(t *testing.T) string { return proctest.FreeAddr(t) }

// buildCustos returns the custos binary, built once for this test binary.
func buildCustos(t *testing.T, _ string) string { return proctest.Binary(t) }

// issuedToken is an access token as /v1/tokens answers it.
type issuedToken struct {
	AccessToken string `json:"access_token"`
	KID         string `json:"kid"`
}

// startAuthority runs `custos serve` on api with conf until the test ends,
// registers a login client and issues it a token for member 1020. call posts
// JSON to the authority with a bearer credential and decodes the answer.
func startAuthority(t *testing.T, bin, data, api, conf string) (call func(path, bearer string, in, out any) int, admin, secret string, tok issuedToken) {
	t.Helper()
	startProcess(t, bin, "serve", "--data", data, "--listen", api, "--config", conf)
	waitFor(t, "the authority", func() bool {
		r, err := http.Get("http://" + api + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	a, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	admin = strings.TrimSpace(string(a))
	call = func(path, bearer string, in, out any) int {
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest("POST", "http://"+api+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(bearer))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if out != nil {
			_ = json.Unmarshal(body, out)
		}
		return resp.StatusCode
	}
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if st := call("/v1/clients", admin, map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &cl); st != 200 && st != 201 {
		t.Fatalf("add client: %d", st)
	}
	if st := call("/v1/tokens", cl.Secret, map[string]any{"subject": "1020", "audience": config.DefaultAudience}, &tok); st != 200 {
		t.Fatalf("issue: %d", st)
	}
	return call, admin, cl.Secret, tok
}

// startProcess runs bin with args until the test ends (then kill -9).
func startProcess(t *testing.T, bin string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s %v:\n%s", filepath.Base(bin), args[0], out)
		}
	})
	return out
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// rawGet sends a request target byte for byte and returns the status and
// refusal reason.
func rawGet(t *testing.T, addr, target, tok string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX_Custos_Subject: 1021\r\nConnection: close, X-Custos-Subject\r\n\r\n", target, addr, tok)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Desc string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Desc
}

// `custos serve` and `custos gateway` as separate processes: the standalone
// gateway refuses unrouted and non-canonical paths, forwards exactly the
// canonical path with the verified subject, agrees with the authority's
// introspection before and after a key revocation, and a gateway with no
// routes warns at start.
func TestGatewayProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	var mu sync.Mutex
	var got []string // what the upstream received: request URI and subject
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.RequestURI+" "+strings.Join(r.Header.Values("X-Custos-Subject"), ","))
		mu.Unlock()
	}))
	defer up.Close()
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}

	api, inproc, gw, bare := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	conf := func(name string, routes bool) string {
		y := fmt.Sprintf("issuer: http://%s\ngateway:\n  upstream: %s\n  listen: %s\n", api, up.URL, inproc)
		if routes {
			y += "  routes:\n    - pattern: GET /api/members/{memberId}/profile\n      data_classes: [name, email]\n      subject_param: memberId\n"
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withRoutes, noRoutes := conf("routes.yaml", true), conf("bare.yaml", false)
	call, admin, secret, tok := startAuthority(t, bin, data, api, withRoutes)
	introspect := func() bool {
		var in struct {
			Active bool `json:"active"`
		}
		if st := call("/v1/tokens/introspect", secret, map[string]string{"token": tok.AccessToken}, &in); st != 200 {
			t.Fatalf("introspect: %d", st)
		}
		return in.Active
	}

	adminAddr := freeAddr(t)
	logs := startProcess(t, bin, "gateway", "--config", withRoutes, "--upstream", up.URL, "--listen", gw,
		"--authority", "http://"+api, "--data", data, "--admin-listen", adminAddr)
	waitFor(t, "the standalone gateway to allow the issued token", func() bool {
		c, err := net.Dial("tcp", gw)
		if err != nil {
			return false
		}
		c.Close()
		st, _ := rawGet(t, gw, "/api/members/1020/profile", tok.AccessToken)
		return st == 200
	})
	if strings.Contains(logs.String(), "WARNING") {
		t.Errorf("a gateway with routes warned:\n%s", logs)
	}
	if !introspect() {
		t.Fatal("introspection says inactive while the gateway allows")
	}
	n := len(received())
	for target, want := range map[string]string{
		"/api/members/1021/profile":           "subject_mismatch",
		"/api/members/1021/profile/":          "unknown_route",
		"/api/members/1021;x/profile":         "unknown_route",
		"/API/members/1021/profile":           "unknown_route",
		"/api/members/1021%2Fprofile":         "unknown_route",
		"/api/members/1021%20/profile":        "unknown_route",
		"/api/members/1021/profile/extra":     "unknown_route",
		"/api/members/1020/../1021/profile":   "subject_mismatch",
		"/api/members/%31%30%32%31/profile":   "subject_mismatch",
		"/api/members/1021\\profile":          "",
		"/api/members/%31%30%32%30/./profile": "200",
	} {
		st, reason := rawGet(t, gw, target, tok.AccessToken)
		switch {
		case want == "200" && st != 200, want != "200" && want != "" && (st != 401 || reason != want), want == "" && st == 200:
			t.Errorf("%q: %d %q, want %s", target, st, reason, want)
		}
	}
	for _, r := range received()[n:] {
		if r != "/api/members/1020/profile 1020" {
			t.Errorf("upstream received %q", r)
		}
	}

	// Token revocation (RFC 7009): both refuse.
	var tok2 struct {
		AccessToken string `json:"access_token"`
	}
	if st := call("/v1/tokens", secret, map[string]any{"subject": "1020", "audience": config.DefaultAudience}, &tok2); st != 200 {
		t.Fatalf("issue: %d", st)
	}
	waitFor(t, "the second token allowed", func() bool {
		st, _ := rawGet(t, gw, "/api/members/1020/profile", tok2.AccessToken)
		return st == 200
	})
	if st := call("/v1/tokens/revoke", secret, map[string]string{"token": tok2.AccessToken}, nil); st != 200 {
		t.Fatalf("revoke token: %d", st)
	}
	var in2 struct {
		Active bool `json:"active"`
	}
	if call("/v1/tokens/introspect", secret, map[string]string{"token": tok2.AccessToken}, &in2); in2.Active {
		t.Error("revoked token introspects active")
	}
	waitFor(t, "the standalone gateway to refuse revoked_token", func() bool {
		st, reason := rawGet(t, gw, "/api/members/1020/profile", tok2.AccessToken)
		return st == 401 && reason == "revoked_token"
	})

	if st := call("/v1/keys/"+tok.KID+"/revoke", admin, map[string]string{"reason": "test"}, nil); st != 200 {
		t.Fatalf("revoke key: %d", st)
	}
	if introspect() {
		t.Error("introspection active after the key was revoked")
	}
	waitFor(t, "the standalone gateway to refuse revoked_key", func() bool {
		st, reason := rawGet(t, gw, "/api/members/1020/profile", tok.AccessToken)
		return st == 401 && reason == "revoked_key"
	})

	// The standalone gateway's /metrics on the admin listener: promlint
	// clean, with the refusals it made by reason.
	scrapeGateway(t, "http://"+adminAddr+"/metrics", "revoked_key", "revoked_token")

	bareLogs := startProcess(t, bin, "gateway", "--config", noRoutes, "--upstream", up.URL, "--listen", bare,
		"--authority", "http://"+api, "--data", data)
	waitFor(t, "the no-routes warning", func() bool {
		s := bareLogs.String()
		return strings.Contains(s, "WARNING") && strings.Contains(s, "no routes")
	})
}

// scrapeGateway reads a gateway's metrics, lints them with promlint and
// checks custos_gateway_requests_total counts each of reasons.
func scrapeGateway(t *testing.T, url string, reasons ...string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, r := range reasons {
		if !regexp.MustCompile(`(?m)^custos_gateway_requests_total\{[^}]*reason="` + r + `"[^}]*\} [1-9]`).Match(body) {
			t.Errorf("no custos_gateway_requests_total sample for reason %s", r)
		}
	}
	if !bytes.Contains(body, []byte("go_goroutines")) {
		t.Error("no Go runtime metrics")
	}
}
