package forensics

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/parquet-go/parquet-go"
)

var smallSet = genConfig{Seed: 7, Hours: 6, PerHour: 2000, Members: 3000, Attack: 0.2}

// writeSet writes a generated data set with small parts (several per hour)
// and returns its events.
func writeSet(t testing.TB, dir string, cfg genConfig) []event.Access {
	t.Helper()
	w, err := NewWriter(dir, WriterOptions{RowGroupRows: 700, PartRows: 1500, MaxOpenHours: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(cfg.Seed, 1))
	evs := make([]event.Access, cfg.Hours*cfg.PerHour)
	for i := range evs {
		evs[i] = genEvent(r, cfg, i)
	}
	// Deliver slightly out of order, as several gateways would: neighbours
	// swap, which now and then crosses an hour boundary.
	order := make([]int, len(evs))
	for i := range order {
		order[i] = i
	}
	for k := 0; k+1 < len(order); k += 2 {
		if r.IntN(3) == 0 {
			order[k], order[k+1] = order[k+1], order[k]
		}
	}
	for _, i := range order {
		if err := w.Write(evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := OpenWith(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func scopeSubjects(t *testing.T, sc *Scope) map[string]Exposure {
	t.Helper()
	got := map[string]Exposure{}
	if err := sc.Each(context.Background(), func(e Exposure) error {
		got[e.Subject] = e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func checkTruth(t *testing.T, sc *Scope, tr truth) {
	t.Helper()
	got := scopeSubjects(t, sc)
	if len(got) != len(tr.subjects) || sc.Subjects != int64(len(tr.subjects)) {
		t.Fatalf("subjects: got %d (field %d), want %d", len(got), sc.Subjects, len(tr.subjects))
	}
	for s, want := range tr.subjects {
		g, ok := got[s]
		if !ok {
			t.Fatalf("subject %s missing", s)
		}
		if !slices.Equal(g.DataClasses, want.DataClasses) || !g.First.Equal(want.First) || !g.Last.Equal(want.Last) || !g.Member {
			t.Fatalf("subject %s: got %+v, want %+v", s, g, *want)
		}
	}
	if sc.Exposures != tr.exposures || sc.Attempts != tr.attempts {
		t.Fatalf("exposures/attempts: got %d/%d, want %d/%d", sc.Exposures, sc.Attempts, tr.exposures, tr.attempts)
	}
	classes := map[string]int64{}
	for _, e := range tr.subjects {
		for _, c := range e.DataClasses {
			classes[c]++
		}
	}
	if len(sc.Classes) != len(classes) {
		t.Fatalf("classes: got %v, want %v", sc.Classes, classes)
	}
	for _, c := range sc.Classes {
		if classes[c.Class] != c.Subjects {
			t.Fatalf("class %s: got %d subjects, want %d", c.Class, c.Subjects, classes[c.Class])
		}
	}
	if len(sc.Routes) != len(tr.routes) {
		t.Fatalf("routes: got %v, want %v", sc.Routes, tr.routes)
	}
	for _, rc := range sc.Routes {
		if w := tr.routes[rc.Route]; w != [3]int64{rc.Exposures, rc.Subjects, rc.Attempts} {
			t.Fatalf("route %s: got %+v, want %v", rc.Route, rc, w)
		}
	}
	var hourly int64
	for _, b := range sc.Hourly {
		hourly += b.Exposures + b.Attempts
	}
	if hourly != tr.exposures+tr.attempts {
		t.Fatalf("timeline sums to %d, want %d", hourly, tr.exposures+tr.attempts)
	}
}

func TestScopeGroundTruth(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	s := openStore(t, dir, Options{})
	attackNet := inPrefix("203.0.113.0/24")
	h2 := genStart.Add(2 * time.Hour)
	h4 := genStart.Add(4 * time.Hour)
	tests := []struct {
		name  string
		specs []string
		match func(*event.Access) bool
	}{
		{"ok/stolen-key", []string{"kid:k-stolen"},
			func(e *event.Access) bool { return e.Token.KID == "k-stolen" }},
		{"ok/key-or-network", []string{"kid:k-stolen", "ip:203.0.113.0/24"},
			func(e *event.Access) bool { return e.Token.KID == "k-stolen" || attackNet(e.SrcIP) }},
		{"ok/unaligned-cidr", []string{"ip:203.0.113.128/25"},
			func(e *event.Access) bool { return inPrefix("203.0.113.128/25")(e.SrcIP) }},
		{"ok/asn-country-window", []string{"asn:AS45090", "country:us", "from:" + h2.Format(time.RFC3339), "to:" + h4.Format(time.RFC3339)},
			func(e *event.Access) bool {
				return (e.ASN == 45090 || e.Country == "US") && !e.Time.Before(h2) && e.Time.Before(h4)
			}},
		{"ok/route-and-subjects", []string{"kid:k-stolen", "route:/v1/members/{id}/addresses", "subject:100-900"},
			func(e *event.Access) bool {
				n, _ := strconv.Atoi(e.Subject)
				return e.Token.KID == "k-stolen" && e.Route == "/v1/members/{id}/addresses" && n >= 100 && n <= 900
			}},
		{"ok/reason-attempts-only", []string{"reason:decoy_subject"},
			func(e *event.Access) bool { return e.Reason == event.ReasonDecoySubject }},
		{"ok/window-only", []string{"from:" + h4.Format(time.RFC3339)},
			func(e *event.Access) bool { return !e.Time.Before(h4) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, err := ParseIndicators(tc.specs)
			if err != nil {
				t.Fatal(err)
			}
			var calls, lastDone, lastTotal int
			sc, err := s.Scope(context.Background(), ind, func(d, tot int) { calls++; lastDone, lastTotal = d, tot })
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			tr := computeTruth(evs, tc.match)
			if len(tr.subjects) == 0 && tc.name != "ok/reason-attempts-only" {
				t.Fatal("test data set has no exposure for this case")
			}
			checkTruth(t, sc, tr)
			if calls < 2 || lastDone != lastTotal || lastTotal != sc.Files || sc.Files == 0 {
				t.Fatalf("progress: %d calls, last %d/%d, files %d", calls, lastDone, lastTotal, sc.Files)
			}
		})
	}
}

func TestScopeLargeIndicatorList(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	s := openStore(t, dir, Options{})
	want := map[string]bool{}
	var ids []string
	for i := 0; i < len(evs); i += 7 {
		want[evs[i].RequestID] = true
		ids = append(ids, evs[i].RequestID)
	}
	sc, err := s.Scope(context.Background(), Indicators{RequestIDs: ids}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	checkTruth(t, sc, computeTruth(evs, func(e *event.Access) bool { return want[e.RequestID] }))
}

func TestCompactKeepsEvents(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	s := openStore(t, dir, Options{})
	before, _ := listHours(dir)
	if len(before[0].Parts) < 2 {
		t.Fatalf("want several parts per hour before compaction, got %d", len(before[0].Parts))
	}
	done, err := s.Compact(context.Background(), genStart.Add(5*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 5 {
		t.Fatalf("compacted %d hours, want 5 (the last is still open)", len(done))
	}
	after, _ := listHours(dir)
	for _, h := range after[:5] {
		if len(h.Parts) != 1 {
			t.Fatalf("hour %s has %d parts after compaction", h.Hour, len(h.Parts))
		}
	}
	if len(after[5].Parts) != len(before[5].Parts) {
		t.Fatal("open hour was compacted")
	}
	ind, _ := ParseIndicators([]string{"kid:k-stolen"})
	sc, err := s.Scope(context.Background(), ind, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	checkTruth(t, sc, computeTruth(evs, func(e *event.Access) bool { return e.Token.KID == "k-stolen" }))
	_, rows, err := s.SQL(context.Background(), "SELECT count(*) FROM events")
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != int64(len(evs)) {
		t.Fatalf("events after compaction: %v, want %d", rows[0][0], len(evs))
	}
}

func TestRetainRespectsHolds(t *testing.T) {
	dir := t.TempDir()
	writeSet(t, dir, genConfig{Seed: 1, Hours: 6, PerHour: 50, Members: 100, Attack: 0.2})
	s := openStore(t, dir, Options{})
	held := genStart.Add(time.Hour)
	removed, err := s.Retain(context.Background(), genStart.Add(4*time.Hour), func(h time.Time) bool { return h.Equal(held) })
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{genStart, genStart.Add(2 * time.Hour), genStart.Add(3 * time.Hour)}
	if !slices.EqualFunc(removed, want, time.Time.Equal) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	hours, _ := listHours(dir)
	var left []time.Time
	for _, h := range hours {
		left = append(left, h.Hour)
	}
	wantLeft := []time.Time{held, genStart.Add(4 * time.Hour), genStart.Add(5 * time.Hour)}
	if !slices.EqualFunc(left, wantLeft, time.Time.Equal) {
		t.Fatalf("left %v, want %v", left, wantLeft)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, eventsDir))
	if len(ents) != 3 {
		t.Fatalf("%d entries left in events/, want 3 (no leftovers)", len(ents))
	}
}

func TestWriterAtomicVisibility(t *testing.T) {
	dir := t.TempDir()
	now := genStart
	w, err := NewWriter(dir, WriterOptions{MaxAge: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 100 {
		if err := w.Write(genEvent(r, genConfig{PerHour: 1000, Members: 10}, i)); err != nil {
			t.Fatal(err)
		}
	}
	hours, _ := listHours(dir)
	if len(hours) != 1 || len(hours[0].Parts) != 0 {
		t.Fatalf("open part visible before sealing: %+v", hours)
	}
	now = now.Add(2 * time.Minute)
	if err := w.Tick(); err != nil {
		t.Fatal(err)
	}
	hours, _ = listHours(dir)
	if len(hours[0].Parts) != 1 || partNum(hours[0].Parts[0].Path) != 0 {
		t.Fatalf("aged part not sealed as part-0: %+v", hours)
	}
	if err := w.Write(event.Access{RequestID: "x"}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("event without time: %v", err)
	}
	w.Close()
	if err := w.Write(genEvent(r, genConfig{PerHour: 1000, Members: 10}, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func corrupt(t *testing.T, dir string) (truncated, flipped string) {
	t.Helper()
	hours, _ := listHours(dir)
	truncated = filepath.Join(hours[1].Dir, "part-90.parquet")
	if err := os.WriteFile(truncated, []byte("PAR1 not really"), 0o640); err != nil {
		t.Fatal(err)
	}
	// A file whose footer is intact but whose pages are damaged.
	src, err := os.ReadFile(hours[2].Parts[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 8; i < len(src)/2; i += 3 {
		src[i] ^= 0x5a
	}
	flipped = filepath.Join(hours[2].Dir, "part-91.parquet")
	if err := os.WriteFile(flipped, src, 0o640); err != nil {
		t.Fatal(err)
	}
	return truncated, flipped
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	truncated, flipped := corrupt(t, dir)
	ind, _ := ParseIndicators([]string{"kid:k-stolen"})

	s := openStore(t, dir, Options{})
	_, err := s.Scope(context.Background(), ind, nil)
	if !errors.Is(err, ErrBadFile) || !strings.Contains(err.Error(), truncated) {
		t.Fatalf("fail/truncated: got %v, want ErrBadFile naming %s", err, truncated)
	}
	os.Rename(truncated, truncated+".bad")
	_, err = s.Scope(context.Background(), ind, nil)
	if !errors.Is(err, ErrBadFile) || !strings.Contains(err.Error(), flipped) {
		t.Fatalf("fail/damaged-pages: got %v, want ErrBadFile naming %s", err, flipped)
	}
	os.Rename(truncated+".bad", truncated)

	p := openStore(t, dir, Options{AllowPartial: true})
	sc, err := p.Scope(context.Background(), ind, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if !sc.Partial || !slices.Contains(sc.SkippedFiles, truncated) || !slices.Contains(sc.SkippedFiles, flipped) {
		t.Fatalf("partial scope: partial=%v skipped=%v", sc.Partial, sc.SkippedFiles)
	}
	// The flipped file is a damaged copy: the rest is still exact.
	checkTruth(t, sc, computeTruth(evs, func(e *event.Access) bool { return e.Token.KID == "k-stolen" }))
	var md, cs bytes.Buffer
	if err := sc.Report(ReportMeta{Incident: "inc-1"}, genStart).WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(&md).ReadString('\n')
	if !strings.HasPrefix(first, "**PARTIAL") || !strings.Contains(first, truncated) {
		t.Fatalf("report first line: %q", first)
	}
	if err := sc.WriteNotificationCSV(&cs); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cs.String(), "# PARTIAL") {
		t.Fatalf("csv first line: %q", strings.SplitN(cs.String(), "\n", 2)[0])
	}
}

func TestNotificationExports(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	s := openStore(t, dir, Options{})
	ind, _ := ParseIndicators([]string{"kid:k-stolen"})
	sc, err := s.Scope(context.Background(), ind, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tr := computeTruth(evs, func(e *event.Access) bool { return e.Token.KID == "k-stolen" })
	var b bytes.Buffer
	if err := sc.WriteNotificationCSV(&b); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if recs[0][0] != "subject" || len(recs)-1 != len(tr.subjects) {
		t.Fatalf("csv: header %v, %d rows, want %d", recs[0], len(recs)-1, len(tr.subjects))
	}
	for _, r := range recs[1:] {
		want := tr.subjects[r[0]]
		if want == nil || r[2] != strings.Join(want.DataClasses, ";") || r[3] != want.First.Format(time.RFC3339Nano) {
			t.Fatalf("csv row %v, want %+v", r, want)
		}
	}
	pq := filepath.Join(t.TempDir(), "notify.parquet")
	f, _ := os.Create(pq)
	if err := sc.WriteNotificationParquet(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := checkNotifyParquet(pq, tr); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := sc.Report(ReportMeta{Incident: "inc-1", Awareness: genStart}, genStart.Add(time.Hour)).WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"subjects": `+strconv.Itoa(len(tr.subjects))) {
		t.Fatal("json report lacks the subject count")
	}
}

// checkNotifyParquet reads the exported Parquet back.
func checkNotifyParquet(path string, tr truth) error {
	rows, err := parquet.ReadFile[notifyRow](path)
	if err != nil {
		return err
	}
	if len(rows) != len(tr.subjects) {
		return fmt.Errorf("parquet notification list has %d rows, want %d", len(rows), len(tr.subjects))
	}
	for _, r := range rows {
		w := tr.subjects[r.Subject]
		if w == nil || !slices.Equal(r.DataClasses, w.DataClasses) || !r.First.Equal(w.First) || !r.Last.Equal(w.Last) {
			return fmt.Errorf("parquet row %+v, want %+v", r, w)
		}
	}
	return nil
}

// addressBook is a test Expander: every member whose addresses were exposed
// reveals one recipient of their own and one shared by everyone.
type addressBook struct{}

func (addressBook) Expand(_ context.Context, subject string, classes []string) ([]Related, error) {
	if !slices.Contains(classes, event.ClassAddress) {
		return nil, nil
	}
	rc := []string{event.ClassName, event.ClassPhone, event.ClassAddress}
	return []Related{{Subject: "nm-" + subject, DataClasses: rc}, {Subject: "nm-shared", DataClasses: rc}}, nil
}

func TestExpander(t *testing.T) {
	dir := t.TempDir()
	evs := writeSet(t, dir, smallSet)
	s := openStore(t, dir, Options{Expander: addressBook{}})
	ind, _ := ParseIndicators([]string{"kid:k-stolen"})
	sc, err := s.Scope(context.Background(), ind, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tr := computeTruth(evs, func(e *event.Access) bool { return e.Token.KID == "k-stolen" })
	withAddr := 0
	var first time.Time
	for _, e := range tr.subjects {
		if slices.Contains(e.DataClasses, event.ClassAddress) {
			withAddr++
			if first.IsZero() || e.First.Before(first) {
				first = e.First
			}
		}
	}
	if sc.Members != int64(len(tr.subjects)) || sc.NonMembers != int64(withAddr+1) {
		t.Fatalf("members %d non-members %d, want %d and %d", sc.Members, sc.NonMembers, len(tr.subjects), withAddr+1)
	}
	got := scopeSubjects(t, sc)
	if sh := got["nm-shared"]; sh.Member || !sh.First.Equal(first) || len(sh.DataClasses) != 3 {
		t.Fatalf("shared recipient: %+v (first want %s)", sh, first)
	}
}

func TestSQL(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	cols, rows, err := s.SQL(context.Background(), "SELECT count(*) AS n FROM events")
	if err != nil || cols[0] != "n" || rows[0][0] != int64(0) {
		t.Fatalf("empty store: %v %v %v", cols, rows, err)
	}
	evs := writeSet(t, dir, genConfig{Seed: 3, Hours: 2, PerHour: 300, Members: 100, Attack: 0.3})
	_, rows, err = s.SQL(context.Background(), "SELECT count(*), count(DISTINCT hour), min(time) FROM events WHERE token_kid = 'k-stolen'")
	if err != nil {
		t.Fatal(err)
	}
	var stolen int64
	for _, e := range evs {
		if e.Token.KID == "k-stolen" {
			stolen++
		}
	}
	if rows[0][0] != stolen || rows[0][1] != int64(2) {
		t.Fatalf("got %v, want %d stolen-key events over 2 hours", rows[0], stolen)
	}
	for _, q := range []string{
		"CREATE TABLE x AS SELECT 1",
		"SELECT 1; DROP VIEW events",
		"COPY (SELECT * FROM events) TO '/tmp/out.csv'",
		"SET enable_external_access = true",
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM events WHERE",
	} {
		if _, _, err := s.SQL(context.Background(), q); err == nil {
			t.Fatalf("fail/%q: accepted", q)
		}
	}
}

func TestDeadlines(t *testing.T) {
	kst := time.FixedZone("KST", 9*3600)
	aware := time.Date(2025, 11, 17, 16, 0, 0, 0, kst)
	now := time.Date(2025, 11, 19, 21, 35, 0, 0, kst)
	ds := Deadlines(aware, now)
	want := []struct {
		due       time.Time
		remaining time.Duration
		overdue   bool
	}{
		{time.Date(2025, 11, 18, 16, 0, 0, 0, kst), -(29*time.Hour + 35*time.Minute), true},
		{time.Date(2025, 11, 20, 16, 0, 0, 0, kst), 18*time.Hour + 25*time.Minute, false},
		{time.Date(2025, 11, 20, 16, 0, 0, 0, kst), 18*time.Hour + 25*time.Minute, false},
		{time.Date(2025, 11, 20, 16, 0, 0, 0, kst), 18*time.Hour + 25*time.Minute, false},
	}
	if len(ds) != len(want) {
		t.Fatalf("%d deadlines", len(ds))
	}
	for i, w := range want {
		d := ds[i]
		if !d.Due.Equal(w.due) || d.Remaining != w.remaining || d.Overdue != w.overdue || d.Name == "" || d.Law == "" {
			t.Fatalf("deadline %d: %+v, want %+v", i, d, w)
		}
	}
	for i, law := range []string{"Network Act", "PIPA", "PIPA", "GDPR art. 33"} {
		if !strings.Contains(ds[i].Law, law) {
			t.Fatalf("deadline %d law %q lacks %q", i, ds[i].Law, law)
		}
	}
	// Exactly at the due time the deadline is not yet overdue.
	if d := Deadlines(aware, aware.Add(24*time.Hour))[0]; d.Overdue || d.Remaining != 0 {
		t.Fatalf("at due time: %+v", d)
	}
}

func TestScopeRefusesBadIndicatorsBeforeScan(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	// A corrupt file that any scan would trip over.
	os.MkdirAll(hourDir(dir, genStart), 0o750)
	os.WriteFile(filepath.Join(hourDir(dir, genStart), "part-0.parquet"), []byte("junk"), 0o640)
	for name, ind := range map[string]Indicators{
		"fail/empty":   {},
		"fail/reason":  {Reasons: []event.Reason{"nope"}},
		"fail/country": {Countries: []string{"Korea"}},
		"fail/range":   {Subjects: []SubjectRange{{From: 9, To: 1}}},
	} {
		_, err := s.Scope(context.Background(), ind, nil)
		if err == nil || errors.Is(err, ErrBadFile) {
			t.Fatalf("%s: got %v, want an indicator error before any scan", name, err)
		}
	}
}
