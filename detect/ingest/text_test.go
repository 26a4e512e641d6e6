package ingest

import (
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

var (
	// As nginx writes them with log_format combined (the default of access_log).
	combinedLine  = `203.0.113.9 - - [24/Jun/2025:12:00:00 +0900] "GET /api/members/42/profile HTTP/1.1" 200 512 "-" "Mozilla/5.0 (X11; Linux x86_64)"`
	combinedQuote = `198.51.100.7 - alice [24/Jun/2025:12:00:01 +0900] "GET /api/members/43/addresses?q=\x22a\x22 HTTP/2.0" 401 0 "https://shop.example/" "curl/8.5.0 \x22x\x22"`
	// nginx's "main" example format: combined plus "$http_x_forwarded_for".
	mainLine = `10.0.0.1 - - [24/Jun/2025:12:00:02 +0900] "POST /api/orders HTTP/1.1" 201 37 "-" "app/2.1" "203.0.113.10"`
	// Envoy's default format string.
	envoyText     = `[2025-06-24T03:00:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"`
	envoyTextDash = `[2025-06-24T03:00:01.000Z] "GET /api/members/42/profile HTTP/1.1" 403 UAEX 0 71 3 - "-" "Go-http-client/1.1" "-" "shop" "-"`
)

func TestParseText(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, s); return v }
	cases := []struct {
		name, format, line string
		want               event.Access
	}{
		{"ok/nginx_combined", FormatNginx, combinedLine, event.Access{Time: at("2025-06-24T03:00:00Z"), Gateway: "nginx", SrcIP: "203.0.113.9",
			Method: "GET", Path: "/api/members/42/profile", Status: 200, Bytes: 512, UserAgent: "Mozilla/5.0 (X11; Linux x86_64)", Verdict: event.Allow}},
		{"ok/nginx_escaped_quotes_refused", FormatNginx, combinedQuote, event.Access{Time: at("2025-06-24T03:00:01Z"), Gateway: "nginx", SrcIP: "198.51.100.7",
			Method: "GET", Path: `/api/members/43/addresses?q="a"`, Status: 401, UserAgent: `curl/8.5.0 "x"`, Verdict: event.Deny}},
		{"ok/nginx_main_trailing_field", FormatNginx, mainLine, event.Access{Time: at("2025-06-24T03:00:02Z"), Gateway: "nginx", SrcIP: "10.0.0.1",
			Method: "POST", Path: "/api/orders", Status: 201, Bytes: 37, UserAgent: "app/2.1", Verdict: event.Allow}},
		{"ok/envoy_default", FormatEnvoy, envoyText, event.Access{Time: at("2025-06-24T03:00:00.31Z"), Gateway: "envoy", SrcIP: "10.0.35.28",
			Method: "POST", Path: "/api/v1/locations", Status: 204, LatencyUS: 226000, UserAgent: "nsq2http", RequestID: "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2", Verdict: event.Allow}},
		{"ok/envoy_dashes_ext_authz_refusal", FormatEnvoy, envoyTextDash, event.Access{Time: at("2025-06-24T03:00:01Z"), Gateway: "envoy",
			Method: "GET", Path: "/api/members/42/profile", Status: 403, Bytes: 71, LatencyUS: 3000, UserAgent: "Go-http-client/1.1", Verdict: event.Deny}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, tok, err := ParseLine(tc.format, []byte(tc.line))
			if err != nil || tok != "" {
				t.Fatalf("err=%v tok=%q", err, tok)
			}
			e.DataClasses, tc.want.DataClasses = nil, nil
			if !e.Time.Equal(tc.want.Time) {
				t.Fatalf("time %v, want %v", e.Time, tc.want.Time)
			}
			e.Time = tc.want.Time
			if e.Method != tc.want.Method || e.Path != tc.want.Path || e.Status != tc.want.Status || e.Bytes != tc.want.Bytes ||
				e.SrcIP != tc.want.SrcIP || e.UserAgent != tc.want.UserAgent || e.RequestID != tc.want.RequestID ||
				e.LatencyUS != tc.want.LatencyUS || e.Verdict != tc.want.Verdict || e.Gateway != tc.want.Gateway {
				t.Fatalf("got  %+v\nwant %+v", e, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, format, line string }{
		{"fail/combined_short", FormatNginx, `203.0.113.9 - - [24/Jun/2025:12:00:00 +0900] "GET / HTTP/1.1" 200`},
		{"fail/combined_bad_time", FormatNginx, strings.Replace(combinedLine, "24/Jun/2025:12:00:00 +0900", "2025-06-24 12:00", 1)},
		{"fail/combined_status", FormatNginx, strings.Replace(combinedLine, " 200 ", " OK ", 1)},
		{"fail/combined_negative_bytes", FormatNginx, strings.Replace(combinedLine, " 512 ", " -5 ", 1)},
		{"fail/combined_unterminated_quote", FormatNginx, `203.0.113.9 - - [24/Jun/2025:12:00:00 +0900] "GET / HTTP/1.1 200 5 "-" "ua`},
		{"fail/combined_unterminated_bracket", FormatNginx, `203.0.113.9 - - [24/Jun/2025:12:00:00 +0900 "GET /"`},
		{"fail/envoy_short", FormatEnvoy, `[2025-06-24T03:00:00.310Z] "POST / HTTP/2" 204 - 154 0 226`},
		{"fail/envoy_time", FormatEnvoy, strings.Replace(envoyText, "2025-06-24T03:00:00.310Z", "24/Jun/2025:12:00:00 +0900", 1)},
		{"fail/envoy_duration", FormatEnvoy, strings.Replace(envoyText, " 226 ", " 2.5 ", 1)},
		{"fail/envoy_combined_line", FormatEnvoy, combinedLine},
		{"fail/nginx_envoy_line", FormatNginx, envoyText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e, _, err := ParseLine(tc.format, []byte(tc.line)); err == nil {
				t.Fatalf("parsed %+v", e)
			}
		})
	}
}

// A file of text lines goes through Read like JSON lines, a bad line counted.
func TestReadText(t *testing.T) {
	in := combinedLine + "\n" + "garbage\n" + mainLine + "\n"
	var got []event.Access
	st, err := Read(strings.NewReader(in), FormatNginx, func(e event.Access) { got = append(got, e) })
	if err != nil || st.Events != 2 || st.Malformed != 1 || st.Errors[0].Line != 2 || got[1].Reported != event.ReportedLog {
		t.Fatalf("err=%v stats=%+v", err, st)
	}
}

func FuzzParseNginxCombined(f *testing.F) {
	fuzzFormat(f, FormatNginx, combinedLine, combinedQuote, mainLine, `1 - - [] "" 0 0 "" ""`)
}

func FuzzParseEnvoyText(f *testing.F) {
	fuzzFormat(f, FormatEnvoy, envoyText, envoyTextDash, `[] "" 0 - 0 0 0 - "" "" "" "" ""`)
}
