package forensics

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/parquet-go/parquet-go"
)

// stripTotals rewrites a part without footer totals, as a writer from before
// them would have left it.
func stripTotals(t *testing.T, path string) {
	t.Helper()
	rows, err := parquet.ReadFile[row](path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	pw := newParquetWriter(f)
	if _, err := pw.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFooterTotalsMatchRows checks that a scope counting the small keys from
// the parts' footer totals answers exactly as one counting every row, with
// one part carrying no totals, and against the ground truth.
func TestFooterTotalsMatchRows(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	hours, _ := listHours(dir)
	for _, h := range hours {
		for _, p := range h.Parts {
			if tot, err := checkFile(p.Path); err != nil || tot == "" {
				t.Fatalf("part %s: totals %q, %v", p.Path, tot, err)
			}
		}
	}
	stripTotals(t, hours[1].Parts[0].Path)
	if tot, err := checkFile(hours[1].Parts[0].Path); err != nil || tot != "" {
		t.Fatalf("stripped part: totals %q, %v", tot, err)
	}
	fast := openStore(t, dir, Options{})
	slow := openStore(t, dir, Options{ignoreTotals: true})
	from, to := genStart.Add(time.Hour), genStart.Add(4*time.Hour)
	rfc := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	tests := []struct {
		name  string
		specs []string
		match func(*event.Access) bool
	}{
		{"ok/key", []string{"kid:k-stolen"}, func(e *event.Access) bool { return e.Token.KID == "k-stolen" }},
		{"ok/reason", []string{"reason:expired"}, func(e *event.Access) bool { return e.Reason == event.ReasonExpired }},
		{"ok/country-or-asn", []string{"country:us", "asn:64500"}, func(e *event.Access) bool { return e.Country == "US" || e.ASN == 64500 }},
		{"ok/key-on-route", []string{"kid:k-stolen", "route:/v1/members/{id}/orders"}, func(e *event.Access) bool {
			return e.Token.KID == "k-stolen" && e.Route == "/v1/members/{id}/orders"
		}},
		{"ok/hour-window", []string{"kid:k-live", "from:" + rfc(from), "to:" + rfc(to)}, func(e *event.Access) bool {
			return e.Token.KID == "k-live" && !e.Time.Before(from) && e.Time.Before(to)
		}},
		// A window off the hour cannot use the totals: counted from rows.
		{"ok/minute-window", []string{"kid:k-stolen", "from:" + rfc(from.Add(7*time.Minute))}, func(e *event.Access) bool {
			return e.Token.KID == "k-stolen" && !e.Time.Before(from.Add(7*time.Minute))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, err := ParseIndicators(tc.specs)
			if err != nil {
				t.Fatal(err)
			}
			a, err := fast.Scope(context.Background(), ind, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := slow.Scope(context.Background(), ind, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if want := a.Files - 1; tc.name == "ok/minute-window" {
				if a.fromTotals != 0 {
					t.Fatalf("%d files counted from totals, want none", a.fromTotals)
				}
			} else if a.fromTotals != want || b.fromTotals != 0 {
				t.Fatalf("files counted from totals: %d and %d, want %d and 0", a.fromTotals, b.fromTotals, want)
			}
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("footer totals and rows differ:\n%s\n%s", ja, jb)
			}
			checkTruth(t, a, computeTruth(evs, tc.match))
		})
	}
}

// TestCompactKeepsTotals checks that a compacted part carries totals equal
// to the sum of its sources'.
func TestCompactKeepsTotals(t *testing.T) {
	dir := t.TempDir()
	writeSet(t, dir, smallSet)
	sum := func() map[totalRow]int64 {
		out := map[totalRow]int64{}
		hours, _ := listHours(dir)
		for _, h := range hours {
			for _, p := range h.Parts {
				tot, err := checkFile(p.Path)
				if err != nil {
					t.Fatal(err)
				}
				rows, err := decodeTotals(tot)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					n := r.N
					r.N, r.First, r.Last = 0, 0, 0
					out[r] += n
				}
			}
		}
		return out
	}
	before := sum()
	s := openStore(t, dir, Options{})
	done, err := s.Compact(context.Background(), genStart.Add(24*time.Hour))
	if err != nil || len(done) == 0 {
		t.Fatalf("compact: %v %v", done, err)
	}
	after := sum()
	if len(before) == 0 || len(before) != len(after) {
		t.Fatalf("groups: %d before, %d after", len(before), len(after))
	}
	for k, n := range before {
		if after[k] != n {
			t.Fatalf("group %+v: %d before, %d after", k, n, after[k])
		}
	}
}
