package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/token"
)

// env is a running custos with the sample shop behind its gateway.
type env struct {
	s          *server.Server
	cfg        config.Config
	pop        shop.Population
	apiURL     string
	gwURL      string
	adminToken string
	api        *api.Client
}

func start(t *testing.T) *env { return startWith(t, nil) }

// startPop runs custos over pop, with the configuration edited by edit if not nil.
func startPop(t *testing.T, pop shop.Population, edit func(*config.Config)) *env {
	t.Helper()
	te := servertest.Start(t, pop, edit)
	e := &env{s: te.S, cfg: te.Cfg, pop: te.Pop, apiURL: te.APIURL, gwURL: te.GatewayURL, adminToken: te.API.Token, api: te.API}
	// The first key is made on first use.
	if _, _, err := e.s.Keys.Signer(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// member returns the i-th member's id.
func (e *env) member(i uint64) string { return fmt.Sprint(e.pop.MemberID(i)) }

// forge signs a token with the real active key that the authority never
// issued, as an attacker holding a stolen key would, and sends it through
// the gateway. It returns the gateway's status.
func (e *env) forge(t *testing.T, sub string) int {
	t.Helper()
	k, signer, err := e.s.Keys.Signer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := token.Sign(signer, k.Alg, k.KID, token.Claims{Issuer: e.cfg.Issuer, Subject: sub, Audience: config.DefaultAudience,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix(), JTI: "forged-" + sub, ClientID: "stolen"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.gwURL+"/api/members/"+sub+"/profile", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// newClient is a cookie-keeping HTTP client that does not follow redirects.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// csrfOf fetches page and returns the CSRF token in its form.
func csrfOf(t *testing.T, c *http.Client, page string) string {
	t.Helper()
	resp, err := c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	m := csrfField.FindStringSubmatch(body(t, resp))
	if m == nil {
		t.Fatalf("no CSRF field on %s", page)
	}
	return m[1]
}

// login logs c in with the admin token and returns the session's CSRF token.
func (e *env) login(t *testing.T, c *http.Client) string {
	t.Helper()
	tok := csrfOf(t, c, e.apiURL+"/console/login")
	resp, err := c.PostForm(e.apiURL+"/console/login", url.Values{"csrf": {tok}, "token": {e.adminToken}, "next": {"/console/keys"}})
	if err != nil {
		t.Fatal(err)
	}
	b := body(t, resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/keys" {
		t.Fatalf("login: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), b)
	}
	return csrfOf(t, c, e.apiURL+"/console/keys/rotate")
}
