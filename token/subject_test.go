package token

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckSubject(t *testing.T) {
	cases := map[string]bool{
		"1020":                                 true,
		"0":                                    true,
		"9f1c2e4a-7b3d-4c5e-8f90-a1b2c3d4e5f6": true,
		"9F1C2E4A-7B3D-4C5E-8F90-A1B2C3D4E5F6": true,
		"kim.minjun+shop@example.co.kr":        true,
		"tenant-7:member_1020":                 true,
		"m-1":                                  true,
		strings.Repeat("7", MaxSubjectBytes):   true,
		"":                                     false,
		" ":                                    false,
		"1020 ":                                false,
		" 1020":                                false,
		"10 20":                                false,
		"1020\t":                               false,
		"1020\n":                               false,
		"1020\r\n":                             false,
		"1020\x00":                             false,
		"1020\x7f":                             false,
		"\u202e1021":                           false, // right-to-left override
		"1021\u2066":                           false, // left-to-right isolate
		"1020\u200b":                           false, // zero-width space
		"\ufeff1020":                           false, // byte-order mark
		"１０２０":                                 false, // full-width digits
		"1020\xff":                             false, // not UTF-8
		"../1021":                              false,
		"..":                                   false,
		".":                                    false,
		"1020/..":                              false,
		"a..b":                                 false,
		"1020/1021":                            false,
		"1020\\1021":                           false,
		"10%2F21":                              false,
		"10%2f21":                              false,
		"%31020":                               false,
		"1020;x=1":                             false,
		"1020?x":                               false,
		"1020#x":                               false,
		"1020,1021":                            false,
		`"1020"`:                               false,
		"<1020>":                               false,
		"*":                                    false,
		strings.Repeat("7", MaxSubjectBytes+1): false,
	}
	for s, ok := range cases {
		err := CheckSubject(s)
		if (err == nil) != ok {
			t.Errorf("CheckSubject(%q) = %v, want ok=%v", s, err, ok)
		}
		if err != nil && !errors.Is(err, ErrSubject) {
			t.Errorf("CheckSubject(%q) = %v, not ErrSubject", s, err)
		}
	}
}

// FuzzCheckSubject: an accepted subject is printable ASCII that every path
// handling leaves as it is — escaping, unescaping, cleaning — and that letter
// case is the only way two accepted subjects can look alike.
func FuzzCheckSubject(f *testing.F) {
	for _, s := range []string{"1020", "../1021", "10%2F21", "\u202e1021", "a@b.c", "x:y", "1020 ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckSubject(s) != nil {
			return
		}
		if s == "" || len(s) > MaxSubjectBytes || !utf8.ValidString(s) {
			t.Fatalf("accepted %q", s)
		}
		for _, r := range s {
			if r <= ' ' || r >= 0x7f {
				t.Fatalf("accepted %q with %U", s, r)
			}
		}
		if u, err := url.PathUnescape(s); err != nil || u != s {
			t.Fatalf("accepted %q that unescapes to %q", s, u)
		}
		if e := url.PathEscape(s); e != s {
			t.Fatalf("accepted %q that escapes to %q", s, e)
		}
		if c := path.Clean("/m/" + s + "/x"); c != "/m/"+s+"/x" {
			t.Fatalf("accepted %q that a path cleans to %q", s, c)
		}
		if strings.ContainsAny(s, "/\\%;?#, \"'<>") {
			t.Fatalf("accepted %q", s)
		}
	})
}
