package server

import (
	"encoding/json"
	"strings"
	"testing"
)

// checkKeys lets through only objects whose keys are exactly the names, each
// once; whatever it lets through decodes to the same values whatever the
// letter case handling of encoding/json.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{
		`{"name":"x","role":"gateway"}`, `{"name":"x","role":"gateway","ROLE":"admin"}`, `{"Role":"admin"}`,
		`{"role":"a","role":"b"}`, `[]`, `{"name":{"role":"admin"}}`, `{`, `{"name":"x"} {}`, `{"rolé":"x"}`,
	} {
		f.Add([]byte(s))
	}
	names := []string{"name", "role", "person", "provider"}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkKeys(b, names) != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		for k := range m {
			ok := false
			for _, n := range names {
				ok = ok || k == n
			}
			if !ok {
				t.Fatalf("let through key %q in %q", k, b)
			}
		}
		// No two keys that encoding/json would fold together.
		lower := map[string]bool{}
		for k := range m {
			if lower[strings.ToLower(k)] {
				t.Fatalf("let through folded duplicate in %q", b)
			}
			lower[strings.ToLower(k)] = true
		}
	})
}

// bearerToken takes the token after a Bearer scheme in any case, never an
// empty one and never one with surrounding space.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer abc", "BEARER  abc ", "Basic abc", "Bearer", "Bearer ", "Bearerabc", " Bearer abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := bearerToken(h)
		if !ok {
			return
		}
		if tok == "" || tok != strings.TrimSpace(tok) {
			t.Fatalf("%q gave token %q", h, tok)
		}
		if scheme, _, _ := strings.Cut(h, " "); !strings.EqualFold(scheme, "bearer") {
			t.Fatalf("%q accepted with scheme %q", h, scheme)
		}
	})
}
