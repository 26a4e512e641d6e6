package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadPrecedence(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("data: /from/file\nlisten: 127.0.0.1:1\ntokens:\n  max_ttl: 10m\n  default_ttl: 2m\n"), 0o600)
	c, err := Load(p, env(map[string]string{"CUSTOS_LISTEN": "127.0.0.1:2", "CUSTOS_TOKEN_TTL": "3m"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "/from/file" || c.Listen != "127.0.0.1:2" || c.Tokens.MaxTTL != 10*time.Minute || c.Tokens.DefaultTTL != 3*time.Minute {
		t.Fatalf("got %+v", c)
	}
	if c.Keys.MaxKeyAge != DefaultMaxKeyAge || c.Keys.Backend != "sealed" {
		t.Fatalf("defaults lost: %+v", c.Keys)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml, field string
	}{
		"fail/unknown_field":       {"data: x\nlisten_addr: y\n", "listen_addr"},
		"fail/backend":             {"data: x\nkeys:\n  backend: vault\n", "keys.backend"},
		"fail/key_age":             {"data: x\nkeys:\n  max_key_age: 240h\n", "keys.max_key_age"},
		"fail/ttl_hard_max":        {"data: x\ntokens:\n  max_ttl: 25h\n", "tokens.max_ttl"},
		"fail/no_data":             {"listen: 127.0.0.1:1\n", "data"},
		"fail/subject_param":       {"data: x\ngateway:\n  routes:\n  - pattern: GET /m/{id}\n    subject_param: member\n", "subject_param"},
		"fail/bad_duration":        {"data: x\ntokens:\n  max_ttl: soon\n", "line 3"},
		"fail/pkcs11_module":       {"data: x\nkeys:\n  backend: pkcs11\n", "keys.pkcs11.module"},
		"fail/default_gt_max":      {"data: x\ntokens:\n  default_ttl: 20m\n", "tokens.default_ttl"},
		"fail/nonce_period_short":  {"data: x\noauth:\n  dpop_nonce: true\n  dpop_nonce_period: 500ms\n", "oauth.dpop_nonce_period"},
		"fail/nonce_period_long":   {"data: x\noauth:\n  dpop_nonce: true\n  dpop_nonce_period: 2h\n", "oauth.dpop_nonce_period"},
		"fail/nonce_period_neg":    {"data: x\noauth:\n  dpop_nonce: true\n  dpop_nonce_period: -1m\n", "oauth.dpop_nonce_period"},
		"fail/nonce_period_unused": {"data: x\noauth:\n  dpop_nonce_period: 1m\n", "oauth.dpop_nonce"},
		"fail/nonce_secret_unused": {"data: x\noauth:\n  dpop_nonce_secret_env: S\n", "oauth.dpop_nonce"},
	} {
		t.Run(name, func(t *testing.T) {
			c := Default()
			err := Parse([]byte(tc.yaml), &c)
			if err == nil {
				err = c.Validate()
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}

// Token-endpoint nonces: on with a period in bounds, or from the environment.
func TestDPoPNonceConfig(t *testing.T) {
	c := Default()
	if err := Parse([]byte("data: x\noauth:\n  dpop_nonce: true\n  dpop_nonce_period: 30s\n  dpop_nonce_secret_env: S\n"), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || !c.OAuth.DPoPNonce || c.OAuth.DPoPNoncePeriod != 30*time.Second {
		t.Fatalf("%v %+v", err, c.OAuth)
	}
	c, err := Load("", env(map[string]string{"CUSTOS_DATA": "x", "CUSTOS_OAUTH_DPOP_NONCE": "true"}))
	if err != nil || !c.OAuth.DPoPNonce {
		t.Fatalf("from the environment: %v %+v", err, c.OAuth)
	}
}

func TestEnvBadValue(t *testing.T) {
	_, err := Load("", env(map[string]string{"CUSTOS_TOKEN_MAX_TTL": "forever"}))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "CUSTOS_TOKEN_MAX_TTL") {
		t.Fatalf("err %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("data: x\nkeys:\n  backend: sealed\n"))
	f.Add([]byte("gateway:\n  routes:\n  - pattern: GET /a/{b}\n    subject_param: b\n"))
	f.Add([]byte("{"))
	f.Add([]byte("scale:\n  redis: redis://a:6379/0,redis://b:6379/1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		if err := Parse(b, &c); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not wrapped in ErrInvalid: %v", err)
			}
			return
		}
		_ = c.Validate()
	})
}

// A StatefulSet hands each detector its ordinal through the environment.
func TestEnvInt(t *testing.T) {
	c, err := Load("", env(map[string]string{"CUSTOS_SCALE_INSTANCE": "2", "CUSTOS_SCALE_INSTANCES": "3"}))
	if err != nil || c.Scale.Instance != 2 || c.Scale.Instances != 3 {
		t.Fatalf("%v %+v", err, c.Scale)
	}
	if _, err := Load("", env(map[string]string{"CUSTOS_SCALE_INSTANCE": "two"})); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "CUSTOS_SCALE_INSTANCE") {
		t.Fatalf("fail/not_a_number: %v", err)
	}
}

// The issuer, when not configured, is the listen address; an issuer that
// would send discovery to another port or address is refused at start.
func TestIssuer(t *testing.T) {
	for _, tc := range []struct {
		name, listen, issuer string
		want                 string // issuer after Validate
		err                  string // Validate or CheckIssuer error
		warn                 bool
	}{
		{name: "ok/derived", listen: "127.0.0.1:7701", want: "http://127.0.0.1:7701"},
		{name: "ok/derived-ipv6", listen: "[::1]:7701", want: "http://[::1]:7701"},
		{name: "ok/derived-wildcard-warns", listen: "0.0.0.0:7701", want: "http://127.0.0.1:7701", warn: true},
		{name: "ok/derived-empty-host-warns", listen: ":7701", want: "http://127.0.0.1:7701", warn: true},
		{name: "ok/same", listen: "127.0.0.1:7701", issuer: "http://127.0.0.1:7701", want: "http://127.0.0.1:7701"},
		{name: "ok/localhost", listen: "127.0.0.1:7701", issuer: "http://localhost:7701", want: "http://localhost:7701"},
		{name: "ok/public-behind-proxy-warns", listen: "127.0.0.1:7701", issuer: "https://auth.shop.example", want: "https://auth.shop.example", warn: true},
		{name: "ok/public-on-wildcard", listen: "0.0.0.0:443", issuer: "https://auth.shop.example", want: "https://auth.shop.example"},
		{name: "fail/loopback-other-port", listen: "127.0.0.1:7701", issuer: "http://127.0.0.1:7700", err: "port"},
		{name: "fail/loopback-default-port", listen: "127.0.0.1:7701", issuer: "http://localhost", err: "port"},
		{name: "fail/loopback-issuer-public-listen", listen: "10.0.0.5:7701", issuer: "http://127.0.0.1:7701", err: "loopback"},
		{name: "fail/port-zero", listen: "127.0.0.1:0", err: "issuer"},
		{name: "fail/not-url", listen: "127.0.0.1:7701", issuer: "custos", err: "issuer"},
		{name: "fail/query", listen: "127.0.0.1:7701", issuer: "https://a.example/?x=1", err: "issuer"},
		{name: "fail/fragment", listen: "127.0.0.1:7701", issuer: "https://a.example/#x", err: "issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Data, c.Listen, c.Issuer = t.TempDir(), tc.listen, tc.issuer
			err := c.Validate()
			var warn string
			if err == nil {
				warn, err = c.CheckIssuer()
			}
			if tc.err != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Issuer != tc.want || (warn != "") != tc.warn {
				t.Fatalf("issuer %q warning %q, want %q warning %v", c.Issuer, warn, tc.want, tc.warn)
			}
		})
	}
}

// Each provider field is checked at load, and the error names it.
func TestValidateProviders(t *testing.T) {
	good := "  - name: kc\n    issuer: https://kc.example/realms/shop\n    jwks_url: https://kc.example/certs\n    audience: shop-api\n    kind: keycloak\n    access_token_lifespan: 5m\n"
	c, err := Load(writeYAML(t, "data: x\nproviders:\n"+good), env(nil))
	if err == nil {
		err = c.Validate()
	}
	if err != nil || len(c.Providers) != 1 || c.Providers[0].AccessTokenLifespan != 5*time.Minute {
		t.Fatalf("good provider refused: %v %+v", err, c.Providers)
	}
	for name, tc := range map[string]struct{ yaml, field string }{
		"name":           {strings.Replace(good, "name: kc", "name: k c", 1), "providers[0].name"},
		"issuer":         {strings.Replace(good, "issuer: https://kc.example/realms/shop", "issuer: kc", 1), "providers[0].issuer"},
		"jwks_http":      {strings.Replace(good, "https://kc.example/certs", "http://kc.example/certs", 1), "providers[0].jwks_url"},
		"audience":       {strings.Replace(good, "    audience: shop-api\n", "", 1), "providers[0].audience"},
		"kind":           {strings.Replace(good, "kind: keycloak", "kind: okta", 1), "providers[0].kind"},
		"lifespan":       {strings.Replace(good, "    access_token_lifespan: 5m\n", "", 1), "providers[0].access_token_lifespan"},
		"lifespan_auth0": {strings.Replace(good, "kind: keycloak", "kind: auth0", 1), "providers[0].access_token_lifespan"},
		"skew":           {good + "    clock_skew: 10m\n", "providers[0].clock_skew"},
		"twice":          {good + strings.Replace(good, "name: kc", "name: kc2", 1), "providers[1].issuer"},
		"custos_issuer":  {strings.Replace(good, "https://kc.example/realms/shop", "http://127.0.0.1:7700", 1), "providers"},
		"unknown_field":  {good + "    secret: x\n", "secret"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(writeYAML(t, "data: x\nproviders:\n"+tc.yaml), env(nil))
			if err == nil {
				err = c.Validate()
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}

func writeYAML(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// scale.redis takes one URL, as before, or a comma-separated list of a
// sharded ledger's Redis databases, each a redis:// URL, none twice.
func TestRedisShardList(t *testing.T) {
	for list, want := range map[string]string{
		"":                                  "",
		"redis://127.0.0.1:6379/0":          "",
		"redis://a:6379/0,redis://b:6379/0": "",
		"redis://a:6379/1, redis://a:6379/2 ,redis://:p%2Cw@a:6380": "",
		"redis://a:6379/0,":                        "empty",
		",redis://a:6379/0":                        "empty",
		"http://a:6379/0":                          "redis://",
		"redis://a:6379/0,rediss://b/0":            "redis://",
		"redis://a:6379/0,b:6379":                  "redis://",
		"redis:///0":                               "redis://",
		"redis://a/x":                              "number",
		"redis://a/01,redis://a/1":                 "number",
		"redis://a:6379/0,redis://A/0":             "same Redis",
		"redis://a,redis://a:6379/0":               "same Redis",
		"redis://u:secret@a/3,redis://v:other@a/3": "same Redis",
	} {
		c := Default()
		c.Data = t.TempDir()
		c.Scale.Redis = list
		err := c.Validate()
		if (want == "") != (err == nil) || (err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want))) {
			t.Errorf("scale.redis %q: %v, want %q", list, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("scale.redis %q: the error shows the password: %v", list, err)
		}
	}
	got := Scale{Redis: "redis://a/0, redis://b/0"}.RedisURLs()
	if len(got) != 2 || got[0] != "redis://a/0" || got[1] != "redis://b/0" {
		t.Fatalf("RedisURLs: %q", got)
	}
	if got := (Scale{Redis: "redis://a:1/2"}).RedisURLs(); len(got) != 1 || got[0] != "redis://a:1/2" {
		t.Fatalf("one URL: %q", got)
	}
}
