package server_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/store"
)

// replica is one `custos serve` process of a scale-out deployment.
type replica struct {
	t          *testing.T
	bin, cfg   string
	env        []string
	data, base string
	cmd        *exec.Cmd
	log        *os.File
}

func (r *replica) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "serve", "--config", r.cfg)
	r.cmd.Env = r.env
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(r.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(r.log.Name())
	r.t.Fatalf("replica %s not ready; log:\n%s", r.base, b)
}

// kill9 ends the process with SIGKILL: nothing is flushed or closed.
func (r *replica) kill9() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	r.cmd.Wait()
}

func (r *replica) api() *api.Client {
	r.t.Helper()
	c, err := api.New(r.base, filepath.Join(r.data, "admin-token"))
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// status sends one request with a bearer credential and returns the status.
func status(t *testing.T, method, u, bearer, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// within polls until ok holds and returns how long it took, failing after d.
func within(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if ok() {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two `custos serve` processes on one PostgreSQL store and one Redis ledger
// (keys in one SoftHSM2 token): a client registered at A1 issues at A2 at
// once; a client secret and an admin credential revoked at A1 by SCIM
// offboarding, and a gateway credential revoked at A1 over the API, are
// refused at A2 within 1 s; a console session made at A1 is honoured and
// ended at A2; after kill -9 and restart of either, the state is the same.
func TestReplicasShareCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two processes")
	}
	ctx := context.Background()
	pg := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	adminDB, err := store.OpenPostgres(ctx, pg)
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_creds_%d", rand.Uint32())
	if _, err := adminDB.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		adminDB.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		adminDB.Close()
	})
	rdb := 10 + rand.IntN(6)
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: rdb})
	defer rc.Close()
	testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(ctx).Err())
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	_, err = os.Stat(module)
	if err == nil {
		_, err = exec.LookPath("softhsm2-util")
	}
	testenv.Require(t, "SoftHSM2 ("+module+"; apt-get install softhsm2)", err)

	dir := t.TempDir()
	hsmConf := filepath.Join(dir, "softhsm2.conf")
	os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(hsmConf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	initTok := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "custos", "--pin", "1234", "--so-pin", "5678")
	initTok.Env = append(os.Environ(), "SOFTHSM2_CONF="+hsmConf)
	if out, err := initTok.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	bin := proctest.Binary(t)
	env := append(os.Environ(), "SOFTHSM2_CONF="+hsmConf, "CUSTOS_TEST_HSM_PIN=1234", "CUSTOS_REQUIRE_SERVICES=")
	mk := func(name string) *replica {
		addr := proctest.FreeAddr(t)
		data := filepath.Join(dir, name)
		cfg := filepath.Join(dir, name+".yaml")
		y := fmt.Sprintf(`data: %s
listen: %s
issuer: https://custos.test
keys:
  backend: pkcs11
  alg: ES256
  pkcs11: {module: %s, token_label: custos, pin_env: CUSTOS_TEST_HSM_PIN}
scale:
  store: "%s&search_path=%s"
  redis: "redis://127.0.0.1:6379/%d"
`, data, addr, module, pg, schema, rdb)
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		lf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{t: t, bin: bin, cfg: cfg, env: env, data: data, base: "http://" + addr, log: lf}
		t.Cleanup(func() {
			if r.cmd != nil && r.cmd.ProcessState == nil {
				r.cmd.Process.Signal(syscall.SIGKILL)
				r.cmd.Wait()
			}
			lf.Close()
		})
		return r
	}
	a1, a2 := mk("a1"), mk("a2")
	a1.start()
	a2.start()
	c1, c2 := a1.api(), a2.api()
	boot2, _ := os.ReadFile(filepath.Join(a2.data, "admin-token"))

	issue := func(r *replica, secret string) int {
		return status(t, "POST", r.base+"/v1/tokens", secret, `{"subject":"1001","audience":"`+config.DefaultAudience+`"}`)
	}
	// A client registered at A1 issues at A2 at once.
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if err := c1.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &cl); err != nil {
		t.Fatal(err)
	}
	if st := issue(a2, cl.Secret); st != 200 {
		t.Fatalf("client registered at A1 refused at A2: %d", st)
	}
	// A person provisioned over SCIM at A1, holder of a client secret and
	// of an admin credential; both work at A2.
	var scimCred, gwCred, adminCred struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := c1.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "okta", "role": "scim"}, &scimCred); err != nil {
		t.Fatal(err)
	}
	var user struct {
		ID string `json:"id"`
	}
	if err := c1.DoAuth(ctx, "POST", "/scim/v2/Users", scimCred.Token, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "dev@shop.example", "active": true}, &user); err != nil {
		t.Fatal(err)
	}
	var held struct {
		Secret string `json:"client_secret"`
	}
	if err := c1.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "batch", "audience": []string{config.DefaultAudience}, "held_by": user.ID}, &held); err != nil {
		t.Fatal(err)
	}
	if err := c1.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "dev-admin", "role": "admin", "person": user.ID}, &adminCred); err != nil {
		t.Fatal(err)
	}
	if err := c1.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "gw", "role": "gateway"}, &gwCred); err != nil {
		t.Fatal(err)
	}
	if st := issue(a2, held.Secret); st != 200 {
		t.Fatalf("held client at A2: %d", st)
	}
	if st := status(t, "GET", a2.base+"/v1/keys", adminCred.Token, ""); st != 200 {
		t.Fatalf("person's admin credential at A2: %d", st)
	}
	if st := status(t, "POST", a2.base+"/v1/ledger/lookup", gwCred.Token, "{}"); st == 401 || st == 403 {
		t.Fatalf("gateway credential at A2: %d", st)
	}
	if st := status(t, "GET", a2.base+"/v1/keys", gwCred.Token, ""); st != 403 {
		t.Fatalf("gateway credential on an admin endpoint at A2: %d", st)
	}

	// SCIM offboarding at A1: both refused at A2 within 1 s.
	if err := c1.DoAuth(ctx, "PATCH", "/scim/v2/Users/"+user.ID, scimCred.Token, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "replace", "path": "active", "value": false}}}, nil); err != nil {
		t.Fatal(err)
	}
	d1 := within(t, time.Second, "offboarded client secret refused at A2", func() bool { return issue(a2, held.Secret) == 401 })
	d2 := within(t, time.Second, "offboarded admin credential refused at A2", func() bool {
		return status(t, "GET", a2.base+"/v1/keys", adminCred.Token, "") == 401
	})
	// A gateway credential revoked at A1 over the API.
	if err := c1.Do(ctx, "POST", "/v1/credentials/"+gwCred.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	d3 := within(t, time.Second, "revoked gateway credential refused at A2", func() bool {
		return status(t, "POST", a2.base+"/v1/ledger/lookup", gwCred.Token, "{}") == 401
	})
	t.Logf("refused at A2 after %v (client secret), %v (admin credential), %v (gateway credential)", d1, d2, d3)
	if st := issue(a2, cl.Secret); st != 200 {
		t.Fatalf("unrelated client at A2: %d", st)
	}

	// A console session made at A1 is honoured at A2, and logging out at
	// A1 ends it at A2.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(a1.base + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u1, _ := url.Parse(a1.base + "/console/")
	var csrf string
	for _, ck := range jar.Cookies(u1) {
		if ck.Name == "custos_login" {
			csrf = ck.Value
		}
	}
	boot1, _ := os.ReadFile(filepath.Join(a1.data, "admin-token"))
	resp, err = hc.PostForm(a1.base+"/console/login", url.Values{"token": {strings.TrimSpace(string(boot1))}, "csrf": {csrf}, "next": {"/console/overview"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session string
	for _, ck := range resp.Cookies() {
		if ck.Name == "custos_session" {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatalf("console login at A1: %d, no session", resp.StatusCode)
	}
	withSession := func(r *replica) int {
		req, _ := http.NewRequest("GET", r.base+"/v1/keys", nil)
		req.AddCookie(&http.Cookie{Name: "custos_session", Value: session})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := withSession(a2); st != 200 {
		t.Fatalf("A1's console session at A2: %d", st)
	}

	// kill -9 A2; a client registered at A1 meanwhile works at the
	// restarted A2, and what was revoked stays refused.
	a2.kill9()
	var late struct {
		Secret string `json:"client_secret"`
	}
	if err := c1.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "late", "audience": []string{config.DefaultAudience}}, &late); err != nil {
		t.Fatal(err)
	}
	a2.start()
	if st := issue(a2, late.Secret); st != 200 {
		t.Fatalf("client registered while A2 was down: %d", st)
	}
	if st := issue(a2, held.Secret); st != 401 {
		t.Fatalf("revoked client secret after A2's restart: %d", st)
	}
	for _, tok := range []string{adminCred.Token, gwCred.Token} {
		if st := status(t, "POST", a2.base+"/v1/ledger/lookup", tok, "{}"); st != 401 {
			t.Fatalf("revoked credential after A2's restart: %d", st)
		}
	}
	if st := withSession(a2); st != 200 {
		t.Fatalf("console session after A2's restart: %d", st)
	}
	// kill -9 A1; A2 revokes, the restarted A1 refuses.
	a1.kill9()
	var gw2 struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := c2.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "gw2", "role": "gateway"}, &gw2); err != nil {
		t.Fatal(err)
	}
	a1.start()
	if st := status(t, "POST", a1.base+"/v1/ledger/lookup", gw2.Token, "{}"); st == 401 || st == 403 {
		t.Fatalf("credential made at A2 while A1 was down, at A1: %d", st)
	}
	if err := c2.Do(ctx, "POST", "/v1/credentials/"+strings.ToUpper(gw2.ID)+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "credential revoked at A2 refused at A1", func() bool {
		return status(t, "POST", a1.base+"/v1/ledger/lookup", gw2.Token, "{}") == 401
	})
	// Revoking, at A2, the credential A1's console session logged in with
	// ends that session at both.
	var self struct {
		ID string `json:"id"`
	}
	if err := c1.Do(ctx, "GET", "/v1/credentials/self", nil, &self); err != nil {
		t.Fatal(err)
	}
	bootID, sessAdmin := self.ID, strings.TrimSpace(string(boot2))
	if st := status(t, "POST", a2.base+"/v1/credentials/"+bootID+"/revoke", sessAdmin, "{}"); st != 200 {
		t.Fatalf("revoke A1's bootstrap at A2: %d", st)
	}
	within(t, time.Second, "console session of a revoked credential refused at A1 and A2", func() bool {
		return withSession(a1) == 401 && withSession(a2) == 401
	})
}
