package gateway

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Releasing one hold never lifts another on the same network or country:
// the block is recomputed from the holds still in force, in whatever order
// they came and are released; a released hold replayed is not applied again.
func TestReleaseKeepsOtherHoldsOnTarget(t *testing.T) {
	e := newEnv(t, testConfig())
	day, hour := t0.Add(24*time.Hour), t0.Add(time.Hour)
	src := netip.MustParseAddr("203.0.113.9")
	countryEnd := func() (time.Time, bool) {
		e.g.blockMu.RLock()
		defer e.g.blockMu.RUnlock()
		b, ok := e.g.countries["CN"]
		return b.Until, ok
	}
	holds := func(id string, until time.Time) []Hold {
		return []Hold{
			{ID: id + "-net", Action: HoldBlockSource, Target: "203.0.113.0/24", Until: until, Reason: "r"},
			{ID: id + "-cc", Action: HoldBlockCountry, Target: "CN", Until: until, Reason: "r"},
		}
	}
	release := func(id string, until time.Time) {
		t.Helper()
		for _, h := range holds(id, until) {
			if !e.g.Release(Release{ID: h.ID, Action: h.Action, Target: h.Target, Until: until, Reason: "false alarm"}) {
				t.Fatalf("release of %s lifted nothing", h.ID)
			}
		}
	}
	for i, order := range [][2]time.Time{{day, hour}, {hour, day}} {
		p := string(rune('a' + i))
		for j, until := range order {
			for _, h := range holds(p+string(rune('0'+j)), until) {
				if err := e.g.Apply(h); err != nil {
					t.Fatal(err)
				}
			}
		}
		dayID, hourID := p+"0", p+"1"
		if order[0] == hour {
			dayID, hourID = p+"1", p+"0"
		}
		// The day-long holds released: the hour-long ones still stand.
		release(dayID, day)
		if !e.g.blocked(src, hour.Add(-time.Minute)) || e.g.blocked(src, hour.Add(time.Minute)) {
			t.Fatalf("order %d: after releasing the day-long hold the network is not held until the hour", i)
		}
		if end, ok := countryEnd(); !ok || !end.Equal(hour) {
			t.Fatalf("order %d: after releasing the day-long hold the country's hold ends %s (%v), want %s", i, end, ok, hour)
		}
		// Replayed (a retried announcement), a released hold stays released.
		for _, h := range holds(dayID, day) {
			if err := e.g.Apply(h); err != nil {
				t.Fatal(err)
			}
		}
		if e.g.blocked(src, hour.Add(time.Minute)) {
			t.Fatalf("order %d: a released hold replayed came back", i)
		}
		release(hourID, hour)
		if e.g.blocked(src, t0) {
			t.Fatalf("order %d: the network is held after both holds were released", i)
		}
		if _, ok := countryEnd(); ok {
			t.Fatalf("order %d: the country is held after both holds were released", i)
		}
	}

	// The shorter released first: the longer stands whole.
	for _, h := range append(holds("l", day), holds("s", hour)...) {
		if err := e.g.Apply(h); err != nil {
			t.Fatal(err)
		}
	}
	release("s", hour)
	if !e.g.blocked(src, day.Add(-time.Minute)) {
		t.Fatal("releasing the hour-long hold cut the day-long one")
	}
	if end, _ := countryEnd(); !end.Equal(day) {
		t.Fatalf("releasing the hour-long hold: the country's hold ends %s, want %s", end, day)
	}
	// A release of a hold the gateway never had lifts nothing.
	if e.g.Release(Release{ID: "unknown", Action: HoldBlockCountry, Target: "CN", Until: day}) {
		t.Fatal("an unknown release reported a lift")
	}
	if end, _ := countryEnd(); !end.Equal(day) {
		t.Fatal("an unknown release lifted a hold")
	}
}

// eventSource is an authority's side of the containment stream, with
// releases.
type eventSource struct {
	mu    sync.Mutex
	holds []Hold
	subs  map[int]func(HoldEvent)
	next  int
}

func (s *eventSource) snapshot(context.Context) ([]Hold, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Hold(nil), s.holds...), nil
}

func (s *eventSource) subscribe(fn func(HoldEvent)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[int]func(HoldEvent){}
	}
	id := s.next
	s.next++
	s.subs[id] = fn
	return func() { s.mu.Lock(); delete(s.subs, id); s.mu.Unlock() }
}

func (s *eventSource) send(e HoldEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Hold != nil {
		s.holds = append(s.holds, *e.Hold)
	}
	if e.Release != nil {
		for i, h := range s.holds {
			if h.ID == e.Release.ID {
				s.holds = append(s.holds[:i], s.holds[i+1:]...)
				break
			}
		}
	}
	for _, fn := range s.subs {
		fn(e)
	}
}

// A standalone gateway lifts a hold when its release comes down the
// stream, and keeps another hold on the same network.
func TestRemoteRelease(t *testing.T) {
	src := &eventSource{}
	srv := httptest.NewServer(ContainmentStreamHandler(src.snapshot, src.subscribe))
	defer srv.Close()
	e := newEnv(t, testConfig())
	rh, err := NewRemoteHolds([]string{srv.URL}, srv.Client(), e.g)
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	rh.OnError = func(error) { refused.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rh.Run(ctx)
	ip := netip.MustParseAddr("198.51.100.7")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitFor("stream not followed", rh.Fresh)
	long, short := block("h-long", "198.51.100.0/24"), block("h-short", "198.51.100.7/32")
	long.Until = t0.Add(2 * time.Hour)
	src.send(HoldEvent{Hold: &long})
	src.send(HoldEvent{Hold: &short})
	waitFor("holds not applied", func() bool { return rh.Applied() == 2 })
	src.send(HoldEvent{Release: &Release{ID: long.ID, Action: long.Action, Target: long.Target, Until: long.Until, Reason: "false alarm", Released: t0}})
	waitFor("release not received", func() bool { return rh.Released() == 1 })
	if !e.g.blocked(ip, t0) {
		t.Fatal("releasing the /24 lifted the /32 hold too")
	}
	if e.g.blocked(netip.MustParseAddr("198.51.100.8"), t0) {
		t.Fatal("the released /24 is still held")
	}
	// A release line the gateway cannot read (as a gateway built before
	// releases reads every one): it reconnects, and keeps the hold even
	// though the snapshot no longer lists it (fail closed).
	src.send(HoldEvent{Release: &Release{ID: short.ID, Action: "unblock_everything", Target: short.Target, Until: short.Until, Reason: "x", Released: t0}})
	waitFor("the unreadable line was not refused", func() bool { return refused.Load() > 0 })
	if !e.g.blocked(ip, t0) || rh.Released() != 1 {
		t.Fatalf("an unreadable release lifted the hold (released %d)", rh.Released())
	}
	other := block("h-other", "203.0.113.0/24")
	src.send(HoldEvent{Hold: &other})
	waitFor("stream not followed after the reconnection", func() bool { return e.g.blocked(netip.MustParseAddr("203.0.113.1"), t0) })
	if !e.g.blocked(ip, t0) {
		t.Fatal("the hold was lifted after the reconnection")
	}
	src.send(HoldEvent{Release: &Release{ID: short.ID, Action: short.Action, Target: short.Target, Until: short.Until, Reason: "false alarm", Released: t0}})
	waitFor("second release not applied", func() bool { return !e.g.blocked(ip, t0) })
}

func TestParseRelease(t *testing.T) {
	good := `{"release":{"id":"op-1","action":"block_country","target":"US","until":"2025-06-24T04:00:00Z","reason":"r","actor":"credential:oncall","released":"2025-06-24T03:00:00Z"}}`
	r, err := ParseRelease([]byte(good))
	if err != nil || r.ID != "op-1" || r.Target != "US" {
		t.Fatalf("%+v %v", r, err)
	}
	if e, err := parseHoldLine([]byte(good)); err != nil || e.Release == nil || e.Hold != nil {
		t.Fatalf("line read as %+v %v", e, err)
	}
	// A gateway that knows only holds refuses the line and keeps what it
	// holds (fail closed): it reconnects and catches up from the snapshot.
	if _, err := ParseHold([]byte(good)); err == nil {
		t.Fatal("a hold parser accepts a release line")
	}
	for _, bad := range []string{
		``, `null`, `{}`, `{"release":null}`, `{"release":{}}`,
		strings.Replace(good, `"id":"op-1"`, `"id":""`, 1),
		strings.Replace(good, `"until":"2025-06-24T04:00:00Z",`, ``, 1),
		strings.Replace(good, `block_country`, `revoke_key`, 1),
		strings.Replace(good, `"US"`, `"us"`, 1),
		strings.Replace(good, `block_country`, `block_source`, 1),
		strings.Replace(good, `"actor"`, `"who"`, 1),
		good + `{}`,
		good[:len(good)-1] + `,"id":"h1"}`,
	} {
		if _, err := ParseRelease([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
		if e, err := parseHoldLine([]byte(bad)); err == nil && e.Release != nil {
			t.Errorf("line %q read as a release", bad)
		}
	}
}

// No line of the stream lifts anything but a hold it names by id, action
// and a valid target; a release always round-trips.
func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(`{"release":{"id":"op-1","action":"block_country","target":"US","until":"2025-06-24T04:00:00Z","reason":"r","released":"2025-06-24T03:00:00Z"}}`))
	f.Add([]byte(`{"release":{"id":"h","action":"block_source","target":"198.51.100.0/24","until":"2025-06-24T04:00:00Z","reason":""}}`))
	f.Add([]byte(`{"id":"h2","action":"block_country","target":"US","until":"2025-06-24T04:00:00Z","reason":"r"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseHoldLine(b)
		if err != nil {
			return
		}
		if (e.Hold == nil) == (e.Release == nil) {
			t.Fatalf("%q read as %+v", b, e)
		}
		if e.Hold != nil {
			return
		}
		r := *e.Release
		if r.ID == "" || r.Until.IsZero() || (Hold{Action: r.Action, Target: r.Target}).check() != nil {
			t.Fatalf("accepted %q as %+v", b, r)
		}
		again, _ := json.Marshal(HoldEvent{Release: &r}.line())
		if r2, err := ParseRelease(again); err != nil || r2.ID != r.ID || r2.Target != r.Target || !r2.Until.Equal(r.Until) {
			t.Fatalf("not stable: %s → %+v %v", again, r2, err)
		}
	})
}
