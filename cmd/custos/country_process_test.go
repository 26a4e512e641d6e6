package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/geodb"
)

// `custos serve` with containment on and a standalone gateway process with a
// GeoIP database behind a trusted proxy. Twenty customers' real tokens read
// from one foreign country, each from a /24 of its own, raise foreign_spread
// at the authority; the block_country hold reaches the standalone gateway
// over the containment stream, which then refuses a fresh /24 of that
// country as blocked_source and still serves a home-country request.
func TestCountryContainmentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	start := time.Now()
	defer func() { t.Logf("processes and requests: %v", time.Since(start).Round(time.Millisecond)) }()
	geo := writeGeoDB(t, dir, map[string]string{"18.204.0.0/16": "US", "159.65.0.0/16": "US", "1.2.3.0/24": "KR"})
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) })}
	upAddr := freeAddr(t)
	go func() {
		if ln, err := net.Listen("tcp", upAddr); err == nil {
			up.Serve(ln)
		}
	}()
	defer up.Close()
	api, inproc, proxy := freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "custos.yaml")
	y := "issuer: http://" + api + "\ndetect:\n  contain: true\ngateway:\n  listen: " + inproc +
		"\n  geoip: [" + geo + "]\n  trusted_proxies: [127.0.0.0/8]\n" +
		"  routes:\n    - pattern: GET /api/members/{memberId}/profile\n      data_classes: [name, email]\n      subject_param: memberId\n"
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	call, admin, secret, _ := startAuthority(t, bin, data, api, conf)
	issue := func(sub string) string {
		var tok issuedToken
		// Each customer's token follows their own login.
		if st := call("/v1/tokens", secret, map[string]any{"subject": sub, "audience": config.DefaultAudience, "session_id": "s-" + sub}, &tok); st != 200 {
			t.Fatalf("issue %s: %d", sub, st)
		}
		return tok.AccessToken
	}
	startProcess(t, bin, "gateway", "--config", conf, "--upstream", "http://"+upAddr, "--listen", proxy, "--authority", "http://"+api, "--data", data)
	get := func(member, tok, xff string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+proxy+"/api/members/"+member+"/profile", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		var body struct {
			Desc string `json:"error_description"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Desc
	}
	home := issue("3000")
	waitFor(t, "the standalone gateway to serve", func() bool {
		st, _ := get("3000", home, "1.2.3.4")
		return st == 200
	})
	// Twenty customers' tokens, replayed from twenty US networks.
	for i := range 20 {
		m := strconv.Itoa(3001 + i)
		src := "18.204." + strconv.Itoa(i) + ".9"
		if i%2 == 1 {
			src = "159.65." + strconv.Itoa(i) + ".9"
		}
		if st, reason := get(m, issue(m), src); st != 200 {
			t.Fatalf("replayed token %d from %s: %d %s, want served", i, src, st, reason)
		}
	}
	fresh := issue("3100")
	adminGet := func(path string) string {
		req, _ := http.NewRequest("GET", "http://"+api+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, reason := get("3100", fresh, "18.204.250.77")
		if (st == 401 || st == 403) && reason == "blocked_source" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a fresh US network: %d %s, want refused blocked_source; alerts %s; holds %s", st, reason, adminGet("/v1/alerts"), adminGet("/v1/containment"))
		}
	}
	if st, reason := get("3000", home, "1.2.3.4"); st != 200 {
		t.Fatalf("home-country request: %d %s, want served", st, reason)
	}
	req, _ := http.NewRequest("GET", "http://"+api+"/v1/containment", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hs struct {
		Holds []struct {
			Action, Target, Rule string
			AlertID              string `json:"alert_id"`
			Evidence             map[string]string
		} `json:"holds"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&hs); err != nil {
		t.Fatal(err)
	}
	if len(hs.Holds) != 1 || hs.Holds[0].Action != "block_country" || hs.Holds[0].Target != "US" || hs.Holds[0].Rule != "foreign_spread" ||
		hs.Holds[0].AlertID == "" || hs.Holds[0].Evidence["country"] != "US" {
		t.Fatalf("holds %+v, want one block_country on US by foreign_spread", hs.Holds)
	}
}

// writeGeoDB writes a GeoIP database placing each network in its country.
func writeGeoDB(t *testing.T, dir string, m map[string]string) string {
	t.Helper()
	nets, err := geodb.Countries(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "geo.mmdb")
	if err := geodb.Write(p, "custos-test", nets); err != nil {
		t.Fatal(err)
	}
	return p
}
