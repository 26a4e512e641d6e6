package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/sim/scenario"
)

func tinyScenario(t testing.TB, edit func(c *scenario.Config)) *scenario.Scenario {
	t.Helper()
	c := scenario.DefaultConfig()
	c.Scale = 0.0001
	if edit != nil {
		edit(&c)
	}
	s, err := scenario.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tally counts independently what the attacker received.
type tally struct {
	served    map[string]int64 // 200 answers on real accounts per route
	attacked  map[uint64]bool  // real members whose data was served
	books     map[uint64]bool  // address lists served
	firstSeen time.Time
}

func (t *tally) Observe(r *scenario.Request) {
	if r.Token != scenario.Forged || r.Status != 200 || r.Decoy || !r.Time.Before(scenario.History().KeyRevoked) {
		return
	}
	t.served[r.Route]++
	if r.Route != shop.RouteAddressEdit {
		t.attacked[r.MemberID] = true
	}
	if r.Route == shop.RouteAddresses {
		t.books[r.MemberID] = true
	}
}

func TestBaselineExposesEveryAttackedMember(t *testing.T) {
	s := tinyScenario(t, nil)
	b := NewBaseline(s)
	ta := &tally{served: map[string]int64{}, attacked: map[uint64]bool{}, books: map[uint64]bool{}}
	var calls int
	if err := Run(context.Background(), s, func(done, exp uint64) { calls++ }, b, ta); err != nil {
		t.Fatal(err)
	}
	w := b.World()
	pop := s.Population()
	if w.ForgedSent != int64(s.Volumes().Attack()) || w.ForgedServed != w.ForgedSent {
		t.Fatalf("served %d of %d, stream has %d forged", w.ForgedServed, w.ForgedSent, s.Volumes().Attack())
	}
	// The crawl walks the whole ID space: every member is exposed, and every
	// non-member of every address book (the list crawl makes several passes).
	if w.MembersExposed != int64(pop.Members) || int64(len(ta.attacked)) > w.MembersExposed {
		t.Fatalf("members exposed %d, population %d, attacked %d", w.MembersExposed, pop.Members, len(ta.attacked))
	}
	var nm int64
	for id := range ta.books {
		nm += int64(pop.NonMembers(id))
	}
	if w.NonMembersExposed < nm || w.SubjectsExposed != w.MembersExposed+w.NonMembersExposed || nm == 0 {
		t.Fatalf("non-members exposed %d, address books served list %d", w.NonMembersExposed, nm)
	}
	if got, want := w.Records[event.ClassEmail], ta.served[shop.RouteProfile]; got != want {
		t.Fatalf("email records %d, profile answers %d", got, want)
	}
	if got, want := w.Records[event.ClassOrderHistory], ta.served[shop.RouteOrders]; got != want {
		t.Fatalf("order records %d, order answers %d", got, want)
	}
	if got, want := w.Records[event.ClassEntranceCode], ta.served[shop.RouteAddressEdit]; got != want {
		t.Fatalf("entrance codes %d, edit answers %d", got, want)
	}
	if w.Records[event.ClassAddress] < ta.served[shop.RouteAddresses] {
		t.Fatalf("address records %d below list answers %d", w.Records[event.ClassAddress], ta.served[shop.RouteAddresses])
	}
	if d := w.AlertDelay; d < 216*24*time.Hour || d > 218*24*time.Hour {
		t.Fatalf("alert delay %v, want about 217 days", d)
	}
	if calls == 0 || w.NormalRequests == 0 {
		t.Fatalf("progress calls %d, normal requests %d", calls, w.NormalRequests)
	}
}

func TestBaselineRefusesAfterRevocation(t *testing.T) {
	s := tinyScenario(t, func(c *scenario.Config) { c.CrawlEnd = time.Date(2025, 12, 31, 0, 0, 0, 0, scenario.KST) })
	b := NewBaseline(s)
	if err := Run(context.Background(), s, nil, b); err != nil {
		t.Fatal(err)
	}
	if w := b.World(); w.ForgedServed >= w.ForgedSent || w.ForgedServed == 0 {
		t.Fatalf("served %d of %d forged with the crawl running past the revocation", w.ForgedServed, w.ForgedSent)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	s := tinyScenario(t, func(c *scenario.Config) { c.Scale = 0.001 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, s, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if s.Emitted() != ProgressEvery {
		t.Fatalf("emitted %d", s.Emitted())
	}
}

func sampleReport(t *testing.T) Report {
	s := tinyScenario(t, nil)
	b := NewBaseline(s)
	if err := Run(context.Background(), s, nil, b); err != nil {
		t.Fatal(err)
	}
	custos := World{Name: "custos", KeyDied: s.Timeline().CustodianLeaves, FirstAlert: s.Timeline().FirstForged.Add(90 * time.Second),
		ForgedSent: 10, NormalRequests: 100, TimeToScope: 3 * time.Minute, Notes: []string{"a | b"}}
	return NewReport(s, "events", b.World(), custos)
}

func TestReportJSON(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "mode", "seed", "scale", "requests", "volumes", "timeline", "historical", "worlds"} {
		if _, ok := got[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	worlds := got["worlds"].([]any)
	if len(worlds) != 2 {
		t.Fatalf("%d worlds", len(worlds))
	}
	for _, k := range []string{"name", "key_died", "first_alert", "alert_delay_seconds", "containment", "forged_sent", "forged_served",
		"subjects_exposed", "members_exposed", "non_members_exposed", "records", "false_alarms_per_10m", "normal_requests", "time_to_scope_seconds", "notes"} {
		for i, w := range worlds {
			if _, ok := w.(map[string]any)[k]; !ok {
				t.Errorf("world %d lacks %q", i, k)
			}
		}
	}
	c := worlds[1].(map[string]any)
	if c["alert_delay_seconds"].(float64) != 90 || c["containment"] != nil || c["time_to_scope_seconds"].(float64) != 180 {
		t.Errorf("custos world %v", c)
	}
	if rec := c["records"].(map[string]any); len(rec) != len(Classes) {
		t.Errorf("records %v", rec)
	}
	h := got["historical"].(map[string]any)
	if h["subjects"].(float64) != 37_550_000 || h["non_members"].(float64) != 4_330_000 {
		t.Errorf("historical %v", h)
	}
}

func TestReportMarkdown(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := r.WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	var table []string
	for _, l := range lines {
		if strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if want := "| | " + HistoricalColumn + " | baseline | custos |"; table[0] != want {
		t.Fatalf("header %q, want %q", table[0], want)
	}
	if table[1] != "|---|---|---|---|" {
		t.Fatalf("separator %q", table[1])
	}
	if len(table) != 2+8+len(Classes)+2 {
		t.Fatalf("%d table lines", len(table))
	}
	for _, l := range table {
		if n := strings.Count(strings.ReplaceAll(l, `\|`, ""), "|"); n != 5 {
			t.Fatalf("row %q has %d cells", l, n-1)
		}
	}
	for _, want := range []string{"| first alert | 2025-11-17 16:00 KST (external) |", "| 37.55 M |", "1 min 30 s", "- custos: a | b", "2025-11-19"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{count(0), "0"}, {count(999), "999"}, {count(1000), "1,000"}, {count(-1234567), "-1,234,567"},
		{duration(217*24*time.Hour + 5*time.Hour), "217 d 5 h"}, {duration(90 * time.Second), "1 min 30 s"},
		{duration(1500 * time.Millisecond), "1.5 s"}, {duration(-2 * time.Hour), "-2 h 0 min"}, {duration(3 * time.Millisecond), "3 ms"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestFalseAlarmRateNeedsEnoughNormalTraffic: a false-alarm rate per 10 M
// normal requests is given only when it rests on at least 10 M of them;
// below that the report and the JSON give the count and what it rests on.
func TestFalseAlarmRateNeedsEnoughNormalTraffic(t *testing.T) {
	for _, tc := range []struct {
		name          string
		alarms, nreqs int64
		rate          bool
		want          string
	}{
		{"count/few", 0, 2381, false, "0 in 2,381 (too few for a rate)"},
		{"count/just-below", 3, MinNormalForRate - 1, false, "3 in 9,999,999 (too few for a rate)"},
		{"rate/at", 1, MinNormalForRate, true, "1.00 (over 10,000,000)"},
		{"rate/above", 3, 60_000_000, true, "0.50 (over 60,000,000)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := World{Name: "custos", FalseAlarms: tc.alarms, NormalRequests: tc.nreqs}
			if _, ok := w.FalseAlarmRate(); ok != tc.rate {
				t.Fatalf("FalseAlarmRate ok = %v, want %v", ok, tc.rate)
			}
			var md bytes.Buffer
			if err := (Report{Worlds: []World{w}}).WriteMarkdown(&md); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(md.String(), "| "+tc.want+" |") {
				t.Fatalf("report lacks %q:\n%s", tc.want, md.String())
			}
			b, err := json.Marshal(w)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				FalseAlarms    int64    `json:"false_alarms"`
				Per10M         *float64 `json:"false_alarms_per_10m"`
				NormalRequests int64    `json:"normal_requests"`
			}
			json.Unmarshal(b, &got)
			if got.FalseAlarms != tc.alarms || got.NormalRequests != tc.nreqs || (got.Per10M != nil) != tc.rate {
				t.Fatalf("JSON %s", b)
			}
		})
	}
}
