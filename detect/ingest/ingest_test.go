package ingest

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
)

func jwt(claims string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(`{"alg":"EdDSA","kid":"k-old"}`)) + "." + e([]byte(claims)) + ".c2ln"
}

var (
	custosLine = `{"time":"2025-06-24T03:00:00Z","request_id":"r1","route":"/v1/members/{id}","status":200,"src_ip":"203.0.113.9","token":{"kid":"k1"}}`
	nginxLine  = `{"time_iso8601":"2025-06-24T03:00:00+00:00","remote_addr":"203.0.113.9","request_method":"GET","request_uri":"/v1/members/42/addresses","status":"200","body_bytes_sent":"512","request_time":"0.012","http_user_agent":"crawler/1","request_id":"n1","http_authorization":"Bearer ` + jwt(`{"jti":"j9","sub":"42","aud":"shop","iat":1750734000}`) + `"}`
	envoyLine  = `{"start_time":"2025-06-24T03:00:00.123Z","method":"GET","path":"/v1/orders","response_code":404,"bytes_sent":10,"duration":7,"downstream_remote_address":"198.51.100.4:5555","user_agent":"app","request_id":"e1","jti":"j5"}`
)

func TestParseLine(t *testing.T) {
	cases := []struct {
		name, format, line string
		check              func(event.Access, string) bool
	}{
		{"ok/custos", FormatCustos, custosLine, func(e event.Access, _ string) bool { return e.RequestID == "r1" && e.Token.KID == "k1" }},
		{"ok/nginx", FormatNginx, nginxLine, func(e event.Access, tok string) bool {
			return e.SrcIP == "203.0.113.9" && e.Status == 200 && e.Bytes == 512 && e.LatencyUS == 12000 && e.Token.JTI == "j9" &&
				e.Token.KID == "k-old" && e.Token.Sub == "42" && e.Token.Aud == "shop" && tok != "" && e.Path == "/v1/members/42/addresses"
		}},
		{"ok/nginx_request_line", FormatNginx, `{"time_local":"24/Jun/2025:12:00:00 +0900","remote_addr":"1.2.3.4","request":"POST /x HTTP/1.1","status":201}`,
			func(e event.Access, _ string) bool {
				return e.Method == "POST" && e.Path == "/x" && e.Time.UTC().Hour() == 3
			}},
		{"ok/envoy", FormatEnvoy, envoyLine, func(e event.Access, tok string) bool {
			return e.SrcIP == "198.51.100.4" && e.Status == 404 && e.LatencyUS == 7000 && e.Token.JTI == "j5" && tok == ""
		}},
		{"fail/custos_no_time", FormatCustos, `{"request_id":"x"}`, nil},
		{"fail/nginx_no_status", FormatNginx, `{"time_iso8601":"2025-06-24T03:00:00Z"}`, nil},
		{"fail/nginx_bad_time", FormatNginx, `{"time_iso8601":"yesterday","status":200}`, nil},
		{"fail/envoy_not_json", FormatEnvoy, `[1,2`, nil},
		{"fail/format", "apache", `{}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, tok, err := ParseLine(tc.format, []byte(tc.line))
			if tc.check == nil {
				if err == nil {
					t.Fatalf("parsed %+v", e)
				}
				return
			}
			if err != nil || !tc.check(e, tok) {
				t.Fatalf("err=%v event=%+v", err, e)
			}
		})
	}
}

func TestReadKeepsGoing(t *testing.T) {
	in := strings.Join([]string{custosLine, "garbage", "", custosLine, `{"time":"bad"}`, strings.Repeat("x", MaxLine+10), custosLine}, "\n")
	var got []string
	st, err := Read(strings.NewReader(in), FormatCustos, func(e event.Access) { got = append(got, e.RequestID) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || st.Events != 3 || st.Malformed != 3 || st.Lines != 7 {
		t.Fatalf("got %v stats %+v", got, st)
	}
	want := []int{2, 5, 6}
	for i, e := range st.Errors {
		if e.Line != want[i] {
			t.Fatalf("error lines %+v, want %v", st.Errors, want)
		}
	}
	if _, err := Read(strings.NewReader(""), "apache", func(event.Access) {}); err == nil {
		t.Fatal("unknown format accepted")
	}
}

type fakeLedger map[ledger.Hash]ledger.Status

func (f fakeLedger) Status(_ context.Context, h ledger.Hash) (ledger.Status, error) { return f[h], nil }
func (f fakeLedger) StatusJTI(_ context.Context, jti string) (ledger.Status, error) {
	if jti == "j5" {
		return ledger.Live, nil
	}
	return ledger.Unknown, nil
}

func TestProvenance(t *testing.T) {
	issued := "Bearer " + jwt(`{"jti":"j1"}`)
	live := fakeLedger{ledger.HashToken(jwt(`{"jti":"j1"}`)): ledger.Live}
	lines := `{"time_iso8601":"2025-06-24T03:00:00Z","status":200,"http_authorization":"` + issued + `"}` + "\n" + nginxLine + "\n"
	var reasons []event.Reason
	st, err := ReadWith(context.Background(), strings.NewReader(lines), Options{Format: FormatNginx, Provenance: live}, func(e event.Access) {
		reasons = append(reasons, e.Reason)
	})
	if err != nil {
		t.Fatal(err)
	}
	if reasons[0] != "" || reasons[1] != event.ReasonNotIssued || st.NotIssued != 1 || st.Checked != 2 {
		t.Fatalf("reasons %v stats %+v", reasons, st)
	}
	// jti only, through the optional capability.
	st, _ = ReadWith(context.Background(), strings.NewReader(envoyLine), Options{Format: FormatEnvoy, Provenance: live}, func(e event.Access) {
		if e.Reason != "" {
			t.Fatalf("live jti flagged: %v", e.Reason)
		}
	})
	if st.Checked != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestHandler(t *testing.T) {
	var n int
	srv := httptest.NewServer(Handler(nil, func(event.Access) { n++ }))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/events?format=envoy", "application/x-ndjson", strings.NewReader(envoyLine+"\nbad\n"+envoyLine))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || n != 2 {
		t.Fatalf("status %d events %d", resp.StatusCode, n)
	}
	resp, _ = http.Post(srv.URL+"/v1/events?format=xml", "text/plain", strings.NewReader(""))
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp, _ = http.Get(srv.URL + "/v1/events")
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func fuzzFormat(f *testing.F, format string, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, _, err := ParseLine(format, line)
		if err == nil && e.Time.IsZero() {
			t.Fatalf("event without time from %q", line)
		}
	})
}

func FuzzParseCustos(f *testing.F) { fuzzFormat(f, FormatCustos, custosLine, `{}`, `{"time":1}`) }
func FuzzParseNginx(f *testing.F) {
	fuzzFormat(f, FormatNginx, nginxLine, `{"time_local":"24/Jun/2025:12:00:00 +0900","status":1,"http_authorization":"Bearer a.b.c"}`)
}
func FuzzParseEnvoy(f *testing.F) {
	fuzzFormat(f, FormatEnvoy, envoyLine, `{"start_time":"1","response_code":"x"}`)
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(custosLine + "\nx\n" + custosLine))
	f.Fuzz(func(t *testing.T, in []byte) {
		good := 0
		st, err := Read(strings.NewReader(string(in)), FormatCustos, func(event.Access) { good++ })
		if err != nil || st.Events != good || st.Events+st.Malformed > st.Lines {
			t.Fatalf("err=%v stats=%+v good=%d", err, st, good)
		}
	})
}
