package server

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/custos-dev/custos/wire"
)

// Lists page: ?limit=N (default DefaultPageLimit, at most MaxPageLimit) and
// ?cursor= the "next" of the previous answer. An answer that stops before
// the end says so with "truncated": true and the "next" cursor.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// page is a request's paging.
type page struct {
	limit int
	after string // the key of the last item of the previous page
}

var errPage = errors.New("limit must be 1 to 1000 and cursor the next of a previous answer")

func pageOf(r *http.Request) (page, error) {
	p := page{limit: DefaultPageLimit}
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageLimit {
			return p, errPage
		}
		p.limit = n
	}
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || len(b) == 0 || len(b) > 1024 {
			return p, errPage
		}
		p.after = string(b)
	}
	return p, nil
}

// paginate orders items by key and returns the page after p.after, with the
// cursor of the next page ("" at the end).
func paginate[T any](items []T, key func(T) string, p page) ([]T, string) {
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	start := 0
	if p.after != "" {
		start = sort.Search(len(items), func(i int) bool { return key(items[i]) > p.after })
	}
	rest := items[start:]
	if len(rest) <= p.limit {
		return rest, ""
	}
	out := rest[:p.limit]
	return out, base64.RawURLEncoding.EncodeToString([]byte(key(out[len(out)-1])))
}

// writePage answers a list: {name: items, "next": cursor, "truncated": bool}.
func writePage[T any](w http.ResponseWriter, r *http.Request, name string, items []T, key func(T) string) {
	p, err := pageOf(r)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	out, next := paginate(items, key, p)
	if out == nil {
		out = []T{}
	}
	body := map[string]any{name: out, "truncated": next != ""}
	if next != "" {
		body["next"] = next
	}
	wire.WriteJSON(w, http.StatusOK, body)
}
