package dpop

import (
	"strings"
	"testing"
)

// FuzzVerify: no input panics, and an accepted proof is self-consistent:
// its thumbprint is its key's, and it verifies again the same way.
func FuzzVerify(f *testing.F) {
	f.Add(Must(Sign(edKey, goodClaims())))
	f.Add(Must(Sign(ecKey, goodClaims())))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := Verify(raw, expect())
		if err != nil {
			return
		}
		if jkt, err := Thumbprint(p.Key); err != nil || jkt != p.JKT {
			t.Fatalf("jkt %q, key's %q (%v)", p.JKT, jkt, err)
		}
		p2, err := Verify(raw, expect())
		if err != nil {
			t.Fatalf("second verification: %v", err)
		}
		p.Key, p2.Key = nil, nil
		if *p2 != *p {
			t.Fatalf("second verification differs: %v", err)
		}
	})
}

// FuzzCanonicalURL: canonical forms are fixed points, and never keep a
// query or fragment.
func FuzzCanonicalURL(f *testing.F) {
	for _, s := range []string{reqURL, "HTTP://a:80/./b/../%7e?q#f", "https://[::1]:443/%2f", "http://a/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := CanonicalURL(raw)
		if err != nil {
			return
		}
		c2, err := CanonicalURL(c)
		if err != nil || c2 != c {
			t.Fatalf("%q -> %q -> %q (%v)", raw, c, c2, err)
		}
	})
}

// Must returns s or panics; for seeds.
func Must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// FuzzCanonicalFast: whenever the fast check calls a URL canonical, the full
// normalisation accepts it and leaves it unchanged.
func FuzzCanonicalFast(f *testing.F) {
	for _, s := range []string{reqURL, "http://a:8080/x/./y", "http://a:80/", "https://a/.../b", "http://a/b/..", "https://a:0443/", "http://a.b-c/~x!$&'()*+,;=:@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if strings.ContainsAny(raw, "?#") || !isCanonical(raw) {
			return
		}
		if c, err := canonicalSlow(raw); err != nil || c != raw {
			t.Fatalf("fast path keeps %q, the full one gives %q (%v)", raw, c, err)
		}
	})
}
