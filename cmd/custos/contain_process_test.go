package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
)

// `custos serve` with containment on and two standalone gateways (a proxy
// and a --decide) as separate processes. The gateways serve tokens they saw
// issued for gateway.max_stale while the authority is killed, then refuse
// them ledger_unavailable; once it is back, a customer's decoy hit with
// their own token blocks their source at both gateways within 1 s of the
// hold, and leaves the signing key active; the hold survives kill -9.
func TestContainmentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) })}
	upAddr := freeAddr(t)
	go func() {
		ln, err := net.Listen("tcp", upAddr)
		if err == nil {
			up.Serve(ln)
		}
	}()
	defer up.Close()
	api, inproc, proxy, decide := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "custos.yaml")
	y := "issuer: http://" + api + "\ndecoys: [\"999999\"]\ndetect:\n  contain: true\ngateway:\n  listen: " + inproc + "\n  max_stale: 4s\n" +
		"  routes:\n    - pattern: GET /api/members/{memberId}/profile\n      data_classes: [name, email]\n      subject_param: memberId\n"
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--data", data, "--listen", api, "--config", conf)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("serve:\n%s", out)
			}
		})
		waitFor(t, "the authority", func() bool {
			r, err := http.Get("http://" + api + "/healthz")
			if err == nil {
				r.Body.Close()
			}
			return err == nil && r.StatusCode == 200
		})
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	authority := serve()
	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path, bearer string, in, out any) int {
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+api+path, body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(bearer))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			_ = json.Unmarshal(b, out)
		}
		return resp.StatusCode
	}
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if st := do("POST", "/v1/clients", string(admin), map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &cl); st != 200 && st != 201 {
		t.Fatalf("add client: %d", st)
	}
	issue := func(sub string) (string, string) {
		var tok struct {
			AccessToken string `json:"access_token"`
			KID         string `json:"kid"`
		}
		if st := do("POST", "/v1/tokens", cl.Secret, map[string]any{"subject": sub, "audience": config.DefaultAudience}, &tok); st != 200 {
			t.Fatalf("issue: %d", st)
		}
		return tok.AccessToken, tok.KID
	}
	attacker, kid := issue("1020")
	other, _ := issue("1030")

	startProcess(t, bin, "gateway", "--config", conf, "--upstream", "http://"+upAddr, "--listen", proxy, "--authority", "http://"+api, "--data", data)
	startProcess(t, bin, "gateway", "--decide", "--config", conf, "--listen", decide, "--authority", "http://"+api, "--data", data)
	viaDecide := func(target, tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+decide+"/v1/decide", nil)
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", target)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, ""
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Custos-Reason")
	}
	viaProxy := func(target, tok string) (int, string) {
		if c, err := net.Dial("tcp", proxy); err != nil {
			return 0, ""
		} else {
			c.Close()
		}
		return rawGet(t, proxy, target, tok)
	}
	both := func(target, tok string) (p, d int, pr, dr string) {
		p, pr = viaProxy(target, tok)
		d, dr = viaDecide(target, tok)
		return
	}
	waitFor(t, "both gateways to allow the issued token", func() bool {
		p, d, _, _ := both("/api/members/1030/profile", other)
		return p == 200 && d == 200
	})

	// Bounded staleness: the authority is killed.
	kill(authority)
	killed := time.Now()
	if p, d, pr, dr := both("/api/members/1030/profile", other); p != 200 || d != 200 {
		t.Fatalf("right after the authority died: proxy %d %s, decide %d %s; want tokens seen issued served", p, pr, d, dr)
	}
	waitFor(t, "both gateways to refuse once max_stale has passed", func() bool {
		p, d, pr, dr := both("/api/members/1030/profile", other)
		return p == 401 && pr == "ledger_unavailable" && d == 401 && dr == "ledger_unavailable"
	})
	// max_stale counts from the stream's last line, at most a heartbeat
	// (2 s) before the kill.
	if since := time.Since(killed); since < 2*time.Second || since > 15*time.Second {
		t.Errorf("served stale for %v, want max_stale (4s) from the stream's last line", since)
	}
	authority = serve()
	waitFor(t, "both gateways to serve again", func() bool {
		p, d, _, _ := both("/api/members/1030/profile", other)
		return p == 200 && d == 200
	})

	// A customer with their own token asks for a decoy member.
	if st, reason := viaProxy("/api/members/999999/profile", attacker); st != 401 || reason != "decoy_subject" {
		t.Fatalf("decoy hit: %d %s", st, reason)
	}
	type holds struct {
		Holds []struct {
			ID, Target, Rule, AlertID string
			Evidence                  map[string]string
		} `json:"holds"`
	}
	var hs holds
	waitFor(t, "the hold at the authority", func() bool {
		return do("GET", "/v1/containment", string(admin), nil, &hs) == 200 && len(hs.Holds) > 0
	})
	held := time.Now()
	if h := hs.Holds[0]; h.Target != "127.0.0.1/32" || h.Rule != "decoy_subject" || h.Evidence["jti"] == "" || h.Evidence["token_sub"] != "1020" {
		t.Fatalf("hold %+v", h)
	}
	for {
		p, d, pr, dr := both("/api/members/1030/profile", other)
		if p == 403 && pr == "blocked_source" || p == 401 && pr == "blocked_source" {
			if d == 403 && dr == "blocked_source" || d == 401 && dr == "blocked_source" {
				break
			}
		}
		if time.Since(held) > time.Second {
			t.Fatalf("1 s after the hold: proxy %d %s, decide %d %s", p, pr, d, dr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ks struct {
		Keys []struct {
			KID   string `json:"kid"`
			State string `json:"state"`
		} `json:"keys"`
	}
	if st := do("GET", "/v1/keys", string(admin), nil, &ks); st != 200 || len(ks.Keys) == 0 {
		t.Fatalf("keys: %d", st)
	}
	for _, k := range ks.Keys {
		if k.KID == kid && k.State != "active" {
			t.Fatalf("a decoy hit with an issued token left the key %s", k.State)
		}
	}

	// kill -9: the hold is still there, and still enforced.
	kill(authority)
	authority = serve()
	hs = holds{}
	if do("GET", "/v1/containment", string(admin), nil, &hs); len(hs.Holds) == 0 {
		t.Fatal("the hold did not survive kill -9")
	}
	_ = authority
}
