package gateway

import (
	"net/http"
	"testing"

	"github.com/custos-dev/custos/event"
)

// A token issued (before the subject grammar, or by another issuer the
// gateway trusts) for a subject outside the grammar never passes a route
// that binds the subject, even on a path that spells the same subject.
func TestRouteBindingSubjectGrammar(t *testing.T) {
	e := newEnv(t, testConfig())
	for _, tc := range []struct{ name, sub, path string }{
		{"trailing-space", "m-1 ", "/api/members/m-1%20/addresses"},
		{"leading-space", " m-1", "/api/members/%20m-1/addresses"},
		{"only-space", " ", "/api/members/%20/addresses"},
		{"tab", "m-1\t", "/api/members/m-1%09/addresses"},
		{"bidi-override", "\u202em-1", "/api/members/%E2%80%AEm-1/addresses"},
		{"zero-width", "m-1\u200b", "/api/members/m-1%E2%80%8B/addresses"},
		{"encoded-slash", "m/1", "/api/members/m%2F1/addresses"},
		{"percent", "m%2F1", "/api/members/m%252F1/addresses"},
		{"semicolon", "m-1;v=1", "/api/members/m-1;v=1/addresses"},
		{"dots-inside", "m..1", "/api/members/m..1/addresses"},
		{"non-ascii-digits", "１", "/api/members/%EF%BC%91/addresses"},
	} {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			tok := e.issue(t, claimsFor(tc.sub))
			before := e.upstream.Load()
			w := e.do(http.MethodGet, tc.path, tok)
			if w.Code == http.StatusOK || e.upstream.Load() != before {
				t.Fatalf("subject %q on %s: status %d, upstream reached", tc.sub, tc.path, w.Code)
			}
			if ev := e.pub.last(t); ev.Verdict != event.Deny || (ev.Reason != event.ReasonSubjectMismatch && ev.Reason != "unknown_route") {
				t.Fatalf("event verdict %s reason %s, want a subject_mismatch denial", ev.Verdict, ev.Reason)
			}
		})
	}
	t.Run("ok/grammar-subjects", func(t *testing.T) {
		for _, sub := range []string{"m-1", "1020", "kim+shop@example.com", "tenant:7", "9f1c2e4a-7b3d-4c5e-8f90-a1b2c3d4e5f6"} {
			if w := e.do(http.MethodGet, "/api/members/"+sub+"/addresses", e.issue(t, claimsFor(sub))); w.Code != http.StatusOK {
				t.Fatalf("subject %q: status %d %s", sub, w.Code, w.Body)
			}
		}
	})
}
