package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/dpop"
)

// oauthAnswer is what POST /oauth2/token answers, with its DPoP-Nonce.
type oauthAnswer struct {
	status int
	nonce  string
	body   struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
}

// A client registered by `custos clients add --jwks --require-dpop` against
// a running authority whose token endpoint requires DPoP nonces
// (oauth.dpop_nonce): it authenticates with private_key_jwt only, its
// requests need a proof, a proof without the current nonce is answered
// use_dpop_nonce with one, the retry with it gets a bound token, and a
// nonce past its period or never issued is refused. Bad flags are refused
// before anything is registered.
func TestClientsAddKeysAndTokenNonces(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	api := freeAddr(t)
	data := filepath.Join(dir, "data")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const period = time.Second
	conf := write("custos.yaml", fmt.Sprintf("issuer: http://%s\noauth:\n  dpop_nonce: true\n  dpop_nonce_period: %s\n", api, period))
	_, admin, _, _ := startAuthority(t, bin, data, api, conf)
	run := func(args ...string) (string, int) {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--server", "http://"+api, "--data", data)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}

	key := ed25519.NewKeyFromSeed([]byte("oauth-process-client-key-0123456"))
	x := base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	good := write("jwks.json", `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"c1","x":"`+x+`"}]}`)
	priv := write("private.json", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"`+x+`","d":"`+
		base64.RawURLEncoding.EncodeToString(key.Seed())+`"}]}`)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"both":             {[]string{"--jwks", good, "--jwks-uri", "https://keys.example/jwks"}, "not both"},
		"missing file":     {[]string{"--jwks", filepath.Join(dir, "nope.json")}, "no such file"},
		"not JSON":         {[]string{"--jwks", write("bad.json", "keys: [x]")}, "not JSON"},
		"private key":      {[]string{"--jwks", priv}, "not a public key"},
		"symmetric key":    {[]string{"--jwks", write("oct.json", `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0"}]}`)}, "--jwks"},
		"empty set":        {[]string{"--jwks", write("empty.json", `{"keys":[]}`)}, "--jwks"},
		"plain http":       {[]string{"--jwks-uri", "http://keys.example/jwks"}, "https"},
		"not a URL":        {[]string{"--jwks-uri", "keys.example"}, "--jwks-uri"},
		"directory as set": {[]string{"--jwks", dir}, "regular file"},
	} {
		out, code := run(append([]string{"clients", "add", "bad", "--audience", config.DefaultAudience}, c.args...)...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want 2 with %q:\n%s", name, code, c.want, out)
		}
	}
	var listed struct {
		Clients []struct {
			Name string `json:"name"`
		} `json:"clients"`
	}
	req, _ := http.NewRequest("GET", "http://"+api+"/v1/clients", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		_ = json.NewDecoder(resp.Body).Decode(&listed)
		resp.Body.Close()
	}
	for _, c := range listed.Clients {
		if c.Name == "bad" {
			t.Fatal("a refused registration left a client behind")
		}
	}
	if len(listed.Clients) == 0 {
		t.Fatal("no client listed: the listing was not read")
	}

	out, code := run("clients", "add", "pkj", "--audience", config.DefaultAudience, "--jwks", good, "--require-dpop", "--json")
	var added struct {
		ClientID    string `json:"client_id"`
		RequireDPoP bool   `json:"require_dpop"`
	}
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &added) != nil || added.ClientID == "" || !added.RequireDPoP {
		t.Fatalf("clients add --jwks --require-dpop: exit %d\n%s", code, out)
	}
	out, code = run("clients", "add", "pkj-uri", "--audience", config.DefaultAudience, "--jwks-uri", "http://127.0.0.1:9/jwks")
	if code != 0 || !strings.Contains(out, "private_key_jwt") || strings.Contains(out, "client_secret:") {
		t.Fatalf("clients add --jwks-uri: exit %d\n%s", code, out)
	}

	endpoint := "http://" + api + "/oauth2/token"
	seq := 0
	// request asks for a token with a fresh client assertion and, unless
	// noProof, a fresh proof carrying nonce.
	request := func(nonce string, noProof bool) oauthAnswer {
		t.Helper()
		seq++
		now := time.Now()
		claims, _ := json.Marshal(map[string]any{"iss": added.ClientID, "sub": added.ClientID, "aud": endpoint,
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprintf("assertion-%d", seq)})
		in := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"c1","typ":"JWT"}`)) + "." +
			base64.RawURLEncoding.EncodeToString(claims)
		assertion := in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(in)))
		form := url.Values{"grant_type": {"client_credentials"}, "client_assertion": {assertion},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}
		req, _ := http.NewRequest("POST", endpoint, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if !noProof {
			p, err := dpop.Sign(key, dpop.NewClaims(fmt.Sprintf("proof-%d", seq), "POST", endpoint, "", nonce, now))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("DPoP", p)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		a := oauthAnswer{status: resp.StatusCode, nonce: resp.Header.Get("DPoP-Nonce")}
		_ = json.NewDecoder(resp.Body).Decode(&a.body)
		return a
	}
	refused := func(what string, a oauthAnswer, code string) {
		t.Helper()
		if a.status != 400 || a.body.Error != code || a.body.AccessToken != "" {
			t.Fatalf("%s: %d %q (%s), want 400 %s", what, a.status, a.body.Error, a.body.Description, code)
		}
	}

	refused("no proof from a client that must bind", request("", true), "invalid_dpop_proof")
	first := request("", false)
	refused("proof without a nonce", first, "use_dpop_nonce")
	if first.nonce == "" {
		t.Fatal("use_dpop_nonce without a DPoP-Nonce header")
	}
	ok := request(first.nonce, false)
	if ok.status != 200 || ok.body.TokenType != "DPoP" || ok.body.AccessToken == "" || ok.nonce == "" {
		t.Fatalf("retry with the nonce: %d %s %q (%s), nonce %q", ok.status, ok.body.TokenType, ok.body.Error, ok.body.Description, ok.nonce)
	}
	jkt, err := dpop.Thumbprint(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(ok.body.AccessToken, ".")[1])
	var tc struct {
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if json.Unmarshal(payload, &tc) != nil || tc.Cnf.JKT != jkt {
		t.Fatalf("token bound to %q, want the client key %q", tc.Cnf.JKT, jkt)
	}
	forged := base64.RawURLEncoding.EncodeToString(make([]byte, 24))
	refused("a nonce never issued", request(forged, false), "use_dpop_nonce")
	refused("another server's nonce", request(dpop.NewNonces([]byte(strings.Repeat("k", 32)), period).Issue(time.Now()), false), "use_dpop_nonce")

	// A nonce is accepted in its period and the next: past two, it is stale.
	time.Sleep(2*period + 100*time.Millisecond)
	stale := request(first.nonce, false)
	refused("a stale nonce", stale, "use_dpop_nonce")
	if stale.nonce == "" || stale.nonce == first.nonce {
		t.Fatalf("refusal of a stale nonce hands out %q (the stale one: %q)", stale.nonce, first.nonce)
	}
	if a := request(stale.nonce, false); a.status != 200 || a.body.TokenType != "DPoP" {
		t.Fatalf("retry with the fresh nonce: %d %q (%s)", a.status, a.body.Error, a.body.Description)
	}

	// A secret named but not set: the authority refuses to start.
	api2 := freeAddr(t)
	bad := write("bad.yaml", fmt.Sprintf("issuer: http://%s\noauth:\n  dpop_nonce: true\n  dpop_nonce_secret_env: CUSTOS_TEST_UNSET_NONCE_SECRET\n", api2))
	cmd := exec.Command(bin, "serve", "--data", filepath.Join(dir, "data2"), "--listen", api2, "--config", bad)
	cmd.Env = append(os.Environ(), "CUSTOS_TEST_UNSET_NONCE_SECRET=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "dpop_nonce_secret_env") {
		t.Fatalf("serve with an unset nonce secret: %v\n%s", err, out)
	}
}
