package console

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
)

func TestSafeNext(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ok/page", "/console/keys", "/console/keys"},
		{"ok/query", "/console/alerts?q=1.2.3.4", "/console/alerts?q=1.2.3.4"},
		{"fail/empty", "", "/console/overview"},
		{"fail/other_origin", "https://evil.example/console/", "/console/overview"},
		{"fail/scheme_relative", "//evil.example/console/", "/console/overview"},
		{"fail/outside_console", "/v1/keys", "/console/overview"},
		{"fail/double_slash_inside", "/console//evil.example", "/console/overview"},
		{"fail/backslash", "/console/\\evil.example", "/console/overview"},
		{"fail/header_injection", "/console/x\r\nSet-Cookie: a=b", "/console/overview"},
	} {
		if got := safeNext(tc.in); got != tc.want {
			t.Errorf("%s: safeNext(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/console/keys", "//x", "/console//x", "/console/\\x", "https://a/console/", "/console/a?b=c#d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := safeNext(in)
		if !strings.HasPrefix(got, Prefix+"/") || strings.Contains(got, "//") || strings.ContainsAny(got, "\\\r\n") {
			t.Fatalf("safeNext(%q) = %q leaves the console", in, got)
		}
	})
}

func FuzzParseCheckpointBody(f *testing.F) {
	f.Add([]byte("example.com/audit\n12\nq83vYVnQ8I1sT5dWFSnZ5m3o4a8mK0u9L2Z0FhR2kJE=\n\n— example.com/audit AAAA\n"))
	f.Add([]byte("x\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		v := parseCheckpointBody(raw)
		if v.Err == "" && v.Origin == "" && len(raw) > 0 && raw[0] != '\n' {
			t.Fatalf("no origin and no error for %q", raw)
		}
	})
}

func TestIndicatorsFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		alerts []detect.Alert
		want   []string
	}{
		{"ok/forged_token", []detect.Alert{{Rule: detect.RuleNotIssued, Entity: "kid:k1",
			Attrs: map[string]string{"kid": "k1", "jti": "j1", "src_ip": "203.0.113.9"}}},
			[]string{"jti:j1", "reason:not_issued", "ip:203.0.113.9"}},
		{"ok/revoked_key_selects_kid", []detect.Alert{{Rule: detect.RuleRevokedKey, Attrs: map[string]string{"kid": "k0", "jti": "j2"}}},
			[]string{"kid:k0", "jti:j2"}},
		{"ok/enumeration_by_entity", []detect.Alert{{Rule: detect.RuleEnumeration, Entity: "ip:198.51.100.7"}},
			[]string{"ip:198.51.100.7"}},
		{"fail/staff_finding_has_none", []detect.Alert{{Rule: "staff_departed", Entity: "staff:s1"}}, nil},
	} {
		got := indicatorSpecs(indicatorsFor(tc.alerts))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		// The specs read back to the same indicators.
		if len(got) > 0 {
			ind, err := forensics.ParseIndicators(got)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if again := indicatorSpecs(ind); !slices.Equal(again, got) {
				t.Errorf("%s: round trip %v", tc.name, again)
			}
		}
	}
}

func FuzzScopeIndicators(f *testing.F) {
	f.Add("reason:not_issued\nip:203.0.113.9")
	f.Add("kid:k1,jti:j")
	f.Add("subject:1-5\nfrom:2025-01-01T00:00:00Z")
	f.Add("bogus")
	f.Fuzz(func(t *testing.T, text string) {
		r := httptest.NewRequest("GET", "/console/incidents/x/scope", nil)
		q := r.URL.Query()
		q.Set("ind", text)
		r.URL.RawQuery = q.Encode()
		ind, _, err := scopeIndicators(r, nil)
		if err == nil {
			if verr := ind.Validate(); verr != nil {
				t.Fatalf("accepted indicators that do not validate: %v", verr)
			}
		}
	})
}

func TestTrafficBuckets(t *testing.T) {
	now := time.Date(2025, 11, 1, 10, 30, 15, 0, time.UTC)
	tr := newTraffic(func() time.Time { return now })
	tr.access(event.Access{Verdict: event.Allow})
	tr.access(event.Access{Verdict: event.Deny, Reason: event.ReasonNotIssued})
	now = now.Add(2 * time.Minute)
	tr.access(event.Access{Verdict: event.Deny, Reason: event.ReasonNotIssued})
	now = now.Add(2 * time.Hour) // everything above has aged out
	tr.access(event.Access{Verdict: event.Deny, Reason: event.ReasonDecoySubject})
	_, _, tot := tr.snapshot()
	if tot.Allowed != 0 || tot.Refused != 1 || len(tot.Reasons) != 1 || tot.Reasons[0].Reason != event.ReasonDecoySubject {
		t.Fatalf("totals %+v", tot)
	}
	now = now.Add(-2*time.Hour + 10*time.Minute)
	tr2 := newTraffic(func() time.Time { return now })
	tr2.access(event.Access{Verdict: event.Allow})
	tr2.access(event.Access{Verdict: event.Deny, Reason: event.ReasonNotIssued})
	req, _, tot2 := tr2.snapshot()
	if tot2.Allowed != 1 || tot2.Refused != 1 || len(req.X) != buckets || len(req.Series) != 2 {
		t.Fatalf("totals %+v, series %d×%d", tot2, len(req.Series), len(req.X))
	}
}
