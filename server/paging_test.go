package server

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestPaginate(t *testing.T) {
	items := []string{"c", "a", "e", "b", "d"}
	id := func(s string) string { return s }
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		r := httptest.NewRequest("GET", "/v1/x?limit=2&cursor="+cursor, nil)
		p, err := pageOf(r)
		if err != nil {
			t.Fatal(err)
		}
		out, next := paginate(slices.Clone(items), id, p)
		got = append(got, out...)
		if next == "" {
			if pages != 2 {
				t.Fatalf("%d pages", pages+1)
			}
			break
		}
		cursor = next
	}
	if !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("%v", got)
	}
	// An item removed between pages does not make the walk repeat or skip.
	p := page{limit: 2, after: "b"}
	if out, _ := paginate([]string{"a", "c", "d"}, id, p); !slices.Equal(out, []string{"c", "d"}) {
		t.Fatalf("%v", out)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "limit=-1", "cursor=!!", "cursor=" + strings.Repeat("QUFB", 400)} {
		t.Run("fail/"+q, func(t *testing.T) {
			if _, err := pageOf(httptest.NewRequest("GET", "/v1/x?"+q, nil)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzPageOf(f *testing.F) {
	f.Add("limit=2&cursor=Yg")
	f.Add("cursor=")
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/v1/x", nil)
		r.URL.RawQuery = q
		p, err := pageOf(r)
		if err != nil {
			return
		}
		items := []string{"a", "b", "c"}
		out, next := paginate(items, func(s string) string { return s }, p)
		if len(out) > p.limit || (next != "" && len(out) != p.limit) {
			t.Fatal(fmt.Sprint(p, out, next))
		}
	})
}
