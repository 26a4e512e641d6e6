package server

import (
	"net/url"
	"strings"
	"testing"
)

func TestAuthorityURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"http://a:7700", []string{"http://a:7700"}},
		{"http://a:7700/, https://b/prefix/ ,", []string{"http://a:7700", "https://b/prefix"}},
		{" HTTP://A:1 ", []string{"http://A:1"}},
	} {
		got, err := AuthorityURLs(tc.in)
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("ok/%q: %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", " , ", "ftp://a", "a:7700", "http://", "http://a?x=1", "http://a#f", "http://u:p@a", "http://a,ftp://b", "mysql://a/b"} {
		if got, err := AuthorityURLs(bad); err == nil {
			t.Errorf("fail/%q accepted as %v", bad, got)
		}
	}
}

func FuzzAuthorityURLs(f *testing.F) {
	for _, s := range []string{"http://a:7700", "http://a,https://b/x/", "", ",,", "http://u:p@a", "http://a?x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		urls, err := AuthorityURLs(s)
		if err != nil {
			return
		}
		if len(urls) == 0 {
			t.Fatal("no error and no URL")
		}
		for _, u := range urls {
			p, err := url.Parse(u)
			if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "" || strings.Contains(u, ",") {
				t.Fatalf("%q gave %q", s, u)
			}
		}
	})
}
