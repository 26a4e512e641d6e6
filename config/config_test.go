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
		"fail/unknown_field":  {"data: x\nlisten_addr: y\n", "listen_addr"},
		"fail/backend":        {"data: x\nkeys:\n  backend: vault\n", "keys.backend"},
		"fail/key_age":        {"data: x\nkeys:\n  max_key_age: 240h\n", "keys.max_key_age"},
		"fail/ttl_hard_max":   {"data: x\ntokens:\n  max_ttl: 25h\n", "tokens.max_ttl"},
		"fail/no_data":        {"listen: 127.0.0.1:1\n", "data"},
		"fail/subject_param":  {"data: x\ngateway:\n  routes:\n  - pattern: GET /m/{id}\n    subject_param: member\n", "subject_param"},
		"fail/bad_duration":   {"data: x\ntokens:\n  max_ttl: soon\n", "line 3"},
		"fail/pkcs11_module":  {"data: x\nkeys:\n  backend: pkcs11\n", "keys.pkcs11.module"},
		"fail/default_gt_max": {"data: x\ntokens:\n  default_ttl: 20m\n", "tokens.default_ttl"},
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
