package forensics

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// totalsKey names the footer entry (Parquet key-value metadata) where a part
// carries its events counted by the small keys. A scope whose indicators use
// only those keys takes its per-key counts from the footers instead of
// grouping every event; the footer is written in the same file as the rows,
// so the two cannot drift apart by a crash or a partial copy.
const totalsKey = "custos.totals.v1"

// totalGroup is one combination of the small keys within a part.
type totalGroup struct {
	hour                                  int64 // Unix seconds of the hour
	route, country, kid, reason, classSet string
	asn                                   uint32
	exposed                               bool
}

// totalCount is what a group holds: events and the first and last time
// (Unix microseconds).
type totalCount struct {
	n, first, last int64
}

// totals count a part's events by totalGroup while it is written.
type totals map[totalGroup]*totalCount

func (t totals) add(r *row) {
	g := totalGroup{hour: r.Time.Truncate(time.Hour).Unix(), route: r.Route, country: r.Country, kid: r.TokenKID,
		reason: r.Reason, classSet: r.ClassSet, asn: r.ASN, exposed: r.Exposed}
	us := r.Time.UnixMicro()
	c := t[g]
	if c == nil {
		t[g] = &totalCount{n: 1, first: us, last: us}
		return
	}
	c.n++
	c.first = min(c.first, us)
	c.last = max(c.last, us)
}

// totalRow is the footer form of one group.
type totalRow struct {
	Hour     int64  `json:"h"`
	Route    string `json:"r"`
	Country  string `json:"c"`
	ASN      uint32 `json:"a"`
	KID      string `json:"k"`
	Reason   string `json:"x"`
	ClassSet string `json:"d"`
	Exposed  bool   `json:"e"`
	N        int64  `json:"n"`
	First    int64  `json:"f"`
	Last     int64  `json:"l"`
}

func (t totals) encode() string {
	rows := make([]totalRow, 0, len(t))
	for g, c := range t {
		rows = append(rows, totalRow{Hour: g.hour, Route: g.route, Country: g.country, ASN: g.asn, KID: g.kid,
			Reason: g.reason, ClassSet: g.classSet, Exposed: g.exposed, N: c.n, First: c.first, Last: c.last})
	}
	b, _ := json.Marshal(rows) // plain strings and numbers: cannot fail
	return string(b)
}

func decodeTotals(s string) ([]totalRow, error) {
	var rows []totalRow
	if err := json.Unmarshal([]byte(s), &rows); err != nil {
		return nil, fmt.Errorf("footer totals: %w", err)
	}
	for _, r := range rows {
		if r.N <= 0 || r.First > r.Last {
			return nil, fmt.Errorf("footer totals: bad group")
		}
		if strings.Contains(r.Route+r.Country+r.KID+r.Reason+r.ClassSet, "\x00") {
			return nil, fmt.Errorf("footer totals: NUL in a key")
		}
	}
	return rows, nil
}

// totalsColumns are the columns of the table footer totals are loaded into,
// named like the event columns so that a scope's WHERE clause applies to
// them; time is the group's hour.
const totalsColumns = `(route VARCHAR, country VARCHAR, asn UINTEGER, token_kid VARCHAR, reason VARCHAR,
	time TIMESTAMP, data_class_set VARCHAR, exposed BOOLEAN, n BIGINT, first TIMESTAMP, last TIMESTAMP)`

// totalsValues renders rows as VALUES tuples for totalsColumns.
func totalsValues(rows []totalRow) string {
	var b strings.Builder
	ts := func(us int64) string { return tsLiteral(time.UnixMicro(us)) }
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s, %d, %s, %s, %s, %s, %t, %d, %s, %s)", sqlQuote(r.Route), sqlQuote(r.Country), r.ASN,
			sqlQuote(r.KID), sqlQuote(r.Reason), ts(r.Hour*1e6), sqlQuote(r.ClassSet), r.Exposed, r.N, ts(r.First), ts(r.Last))
	}
	return b.String()
}

// footerKeys reports whether a scope's small-key counts can come from the
// footer totals: every indicator is one of the totals' keys, and the window,
// if any, starts and ends on whole hours.
func footerKeys(ind *Indicators) bool {
	aligned := func(t time.Time) bool { return t.IsZero() || t.Equal(t.Truncate(time.Hour)) }
	return len(ind.JTIs) == 0 && len(ind.RequestIDs) == 0 && len(ind.Sources) == 0 && len(ind.Subjects) == 0 &&
		aligned(ind.From) && aligned(ind.To)
}
