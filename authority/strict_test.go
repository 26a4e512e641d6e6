package authority

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-dev/custos/token"
)

// POST /v1/tokens reads its body by the one strict rule and its subject by
// the subject grammar: every body below is refused with 400 invalid_request
// and nothing reaches the ledger. Each would otherwise have issued a token
// for a subject other than the one a case-sensitive reader saw, or one an
// upstream or a person reads as another member.
func TestHTTPIssueStrict(t *testing.T) {
	f := newFixture(t)
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/tokens", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+f.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	aud := `,"audience":"shop-api"`
	bodies := map[string]string{
		// Duplicate keys, in every spelling.
		"dup/exact":          `{"subject":"1020","subject":"1021"` + aud + `}`,
		"dup/upper":          `{"subject":"1020","SUBJECT":"1021"` + aud + `}`,
		"dup/upper_first":    `{"SUBJECT":"1021","subject":"1020"` + aud + `}`,
		"dup/title":          `{"subject":"1020","Subject":"1021"` + aud + `}`,
		"dup/escaped":        `{"subject":"1020","\u0053ubject":"1021"` + aud + `}`,
		"dup/long_s":         "{\"subject\":\"1020\",\"\u017fubject\":\"1021\"" + aud + "}",
		"dup/audience":       `{"subject":"1020","audience":"shop-api","AUDIENCE":"admin-api"}`,
		"dup/ttl":            `{"subject":"1020"` + aud + `,"ttl":60,"TTL":900}`,
		"dup/apart":          `{"subject":"1020"` + aud + `,"ttl":60,"session_id":"s","sUbJeCt":"1021"}`,
		"case/title":         `{"Subject":"1021"` + aud + `}`,
		"case/upper":         `{"SUBJECT":"1021"` + aud + `}`,
		"case/audience":      `{"subject":"1020","Audience":"shop-api"}`,
		"case/kelvin_s":      "{\"subject\":\"1020\",\"audience\":\"shop-api\",\"\u017fession_id\":\"s\"}",
		"shape/trailing":     `{"subject":"1020"` + aud + `}{"subject":"1021"` + aud + `}`,
		"shape/unknown":      `{"subject":"1020"` + aud + `,"sub":"1021"}`,
		"shape/not_utf8":     "{\"subject\":\"10\xff20\"" + aud + "}",
		"shape/array":        `[{"subject":"1020"` + aud + `}]`,
		"shape/empty":        ``,
		"shape/null_subject": `{"subject":null` + aud + `}`,
		// Subjects outside the grammar.
		"sub/space":           `{"subject":" "` + aud + `}`,
		"sub/trailing_space":  `{"subject":"1020 "` + aud + `}`,
		"sub/leading_space":   `{"subject":" 1020"` + aud + `}`,
		"sub/tab":             `{"subject":"1020\t"` + aud + `}`,
		"sub/bidi_escaped":    `{"subject":"\u202e1021"` + aud + `}`,
		"sub/bidi_raw":        "{\"subject\":\"\u202e1021\"" + aud + "}",
		"sub/isolate":         `{"subject":"\u20661021"` + aud + `}`,
		"sub/zero_width":      `{"subject":"10\u200b20"` + aud + `}`,
		"sub/nul":             `{"subject":"1020\u0000"` + aud + `}`,
		"sub/dot_dot_slash":   `{"subject":"../1021"` + aud + `}`,
		"sub/dot_dot":         `{"subject":".."` + aud + `}`,
		"sub/backslash":       `{"subject":"..\\1021"` + aud + `}`,
		"sub/encoded_slash":   `{"subject":"10%2F21"` + aud + `}`,
		"sub/encoded_slash_l": `{"subject":"10%2f21"` + aud + `}`,
		"sub/slash":           `{"subject":"10/21"` + aud + `}`,
		"sub/path_param":      `{"subject":"1020;x"` + aud + `}`,
		"sub/query":           `{"subject":"1020?x"` + aud + `}`,
		"sub/fullwidth":       `{"subject":"１０２０"` + aud + `}`,
		"sub/empty":           `{"subject":""` + aud + `}`,
		"sub/overlong":        `{"subject":"` + strings.Repeat("7", token.MaxSubjectBytes+1) + `"` + aud + `}`,
	}
	for name, body := range bodies {
		t.Run("fail/"+name, func(t *testing.T) {
			before := len(f.led.m)
			status, ans := post(body)
			if status != http.StatusBadRequest || !strings.Contains(ans, `"error":"invalid_request"`) || !strings.Contains(ans, `"error_description"`) {
				t.Fatalf("got %d %s, want 400 invalid_request", status, ans)
			}
			if len(f.led.m) != before {
				t.Fatal("a refused request wrote to the ledger")
			}
		})
	}
	for _, sub := range []string{"1020", strings.Repeat("7", token.MaxSubjectBytes), "9f1c2e4a-7b3d-4c5e-8f90-a1b2c3d4e5f6", "kim.minjun+shop@example.co.kr"} {
		t.Run("ok/"+sub[:min(len(sub), 12)], func(t *testing.T) {
			if status, ans := post(`{"subject":"` + sub + `"` + aud + `}`); status != http.StatusOK {
				t.Fatalf("subject %q: %d %s", sub, status, ans)
			}
		})
	}
}

// Introspection and revocation read their parameters as strictly: a
// repeated form parameter, or a JSON body with a duplicate or miscased key,
// is refused with 400 and the token stays as it was.
func TestHTTPTokenParamStrict(t *testing.T) {
	f := newFixture(t)
	do := func(path, ct, body string) (int, string) {
		req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+f.secret)
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, ans := do("/v1/tokens", "application/json", `{"subject":"1020","audience":"shop-api"}`)
	if st != 200 {
		t.Fatalf("issue: %d %s", st, ans)
	}
	tok := ans[strings.Index(ans, `"access_token":"`)+len(`"access_token":"`):]
	tok = tok[:strings.IndexByte(tok, '"')]
	form, js := "application/x-www-form-urlencoded", "application/json"
	for _, path := range []string{"/v1/tokens/introspect", "/v1/tokens/revoke"} {
		for name, c := range map[string][2]string{
			"form-repeated":       {form, "token=" + tok + "&token=other"},
			"form-repeated-hint":  {form, "token=" + tok + "&token_type_hint=a&token_type_hint=b"},
			"json-duplicate":      {js, `{"token":"` + tok + `","token":"other"}`},
			"json-duplicate-case": {js, `{"token":"` + tok + `","TOKEN":"other"}`},
			"json-miscased":       {js, `{"Token":"` + tok + `"}`},
			"json-trailing":       {js, `{"token":"` + tok + `"}{}`},
		} {
			t.Run("fail"+path+"/"+name, func(t *testing.T) {
				if st, ans := do(path, c[0], c[1]); st != 400 || !strings.Contains(ans, `"invalid_request"`) {
					t.Fatalf("got %d %s, want 400 invalid_request", st, ans)
				}
			})
		}
	}
	if st, ans := do("/v1/tokens/introspect", form, "token="+tok); st != 200 || !strings.Contains(ans, `"active":true`) {
		t.Fatalf("refused revocations changed the token: %d %s", st, ans)
	}
}
