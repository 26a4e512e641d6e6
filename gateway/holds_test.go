package gateway

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// holdSource is an authority's side of the containment feed.
type holdSource struct {
	mu    sync.Mutex
	holds []Hold
	subs  map[int]func(Hold)
	next  int
}

func (s *holdSource) snapshot(context.Context) ([]Hold, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Hold(nil), s.holds...), nil
}

func (s *holdSource) subscribe(fn func(Hold)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[int]func(Hold){}
	}
	id := s.next
	s.next++
	s.subs[id] = fn
	return func() { s.mu.Lock(); delete(s.subs, id); s.mu.Unlock() }
}

func (s *holdSource) add(h Hold, announce bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds = append(s.holds, h)
	if announce {
		for _, fn := range s.subs {
			fn(h)
		}
	}
}

func block(id, prefix string) Hold {
	return Hold{ID: id, Action: HoldBlockSource, Target: prefix, Until: t0.Add(time.Hour), Reason: "custos alert " + id}
}

// A standalone gateway applies the holds in force when it connects, each
// new one as it is made, and after a reconnection the ones it missed.
func TestRemoteHolds(t *testing.T) {
	src := &holdSource{}
	src.add(block("h1", "198.51.100.7/32"), false)
	srv := httptest.NewServer(HoldStreamHandler(src.snapshot, src.subscribe))
	defer srv.Close()
	e := newEnv(t, testConfig())
	rh, err := NewRemoteHolds([]string{srv.URL}, srv.Client(), e.g)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rh.Run(ctx)
	blocked := func(ip string) bool { return e.g.blocked(netip.MustParseAddr(ip), t0) }
	wait := func(ip string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !blocked(ip); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s not blocked", ip)
			}
		}
	}
	wait("198.51.100.7")
	at := time.Now()
	src.add(block("h2", "2001:db8::7/128"), true)
	wait("2001:db8::7")
	if d := time.Since(at); d > time.Second {
		t.Errorf("a new hold took %v", d)
	}
	if blocked("198.51.100.8") || blocked("2001:db8::8") {
		t.Error("a block reaches beyond its prefix")
	}
	// Missed while disconnected: caught up from the snapshot.
	srv.CloseClientConnections()
	src.add(block("h3", "203.0.113.9/32"), false)
	wait("203.0.113.9")
	if !rh.Fresh() || rh.Applied() < 3 {
		t.Errorf("fresh %v, applied %d", rh.Fresh(), rh.Applied())
	}
}

func TestParseHold(t *testing.T) {
	good := `{"id":"h1","action":"block_source","target":"198.51.100.7/32","until":"2025-06-24T04:00:00Z","reason":"r"}`
	if _, err := ParseHold([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		``, `null`, `[]`, `{}`,
		strings.Replace(good, `block_source`, `revoke_key`, 1),
		strings.Replace(good, `block_source`, `block_country`, 1),
		strings.Replace(good, `198.51.100.7/32`, `198.51.100.7`, 1),
		strings.Replace(good, `198.51.100.7/32`, `0.0.0.0/-1`, 1),
		strings.Replace(good, `"id":"h1"`, `"id":""`, 1),
		strings.Replace(good, `"until":"2025-06-24T04:00:00Z",`, ``, 1),
		strings.Replace(good, `"reason"`, `"Reason2"`, 1),
		good + `{}`,
		good[:len(good)-1] + `,"extra":1}`,
	} {
		if _, err := ParseHold([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// No line of the stream makes a hold whose prefix or country does not
// parse back, or applies anything but a block.
func FuzzParseHold(f *testing.F) {
	f.Add([]byte(`{"id":"h1","action":"block_source","target":"198.51.100.7/32","until":"2025-06-24T04:00:00Z","reason":"r"}`))
	f.Add([]byte(`{"id":"h","action":"block_source","target":"::/0","until":"2025-06-24T04:00:00Z","reason":""}`))
	f.Add([]byte(`{"id":"h2","action":"block_country","target":"US","until":"2025-06-24T04:00:00Z","reason":"r"}`))
	f.Add([]byte(`{"id":"h3","action":"block_country","target":"us","until":"2025-06-24T04:00:00Z","reason":"r"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHold(b)
		if err != nil {
			return
		}
		if h.ID == "" {
			t.Fatalf("accepted %q as %+v", b, h)
		}
		switch h.Action {
		case HoldBlockSource:
			if p, err := h.Prefix(); err != nil || !p.IsValid() {
				t.Fatalf("accepted %q as %+v", b, h)
			}
		case HoldBlockCountry:
			cc, err := h.Country()
			if err != nil || len(cc) != 2 || strings.ToUpper(cc) != cc || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' {
				t.Fatalf("accepted %q as %+v", b, h)
			}
		default:
			t.Fatalf("accepted %q as %+v", b, h)
		}
	})
}

// A hold never shortens another on the same target, whichever comes
// first: an operator's hour on a country or network that detection holds
// for a day leaves the day.
func TestApplyKeepsLaterEnd(t *testing.T) {
	e := newEnv(t, testConfig())
	day, hour := t0.Add(24*time.Hour), t0.Add(time.Hour)
	src := netip.MustParseAddr("203.0.113.9")
	for _, order := range [][2]time.Time{{day, hour}, {hour, day}} {
		e.g.Unblock(netip.MustParsePrefix("203.0.113.0/24"))
		e.g.UnblockCountry("CN")
		for i, until := range order {
			for _, h := range []Hold{
				{ID: "b", Action: HoldBlockSource, Target: "203.0.113.0/24", Until: until, Reason: "r"},
				{ID: "c", Action: HoldBlockCountry, Target: "CN", Until: until, Reason: "r"},
			} {
				h.ID += string(rune('0' + i))
				if err := e.g.Apply(h); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !e.g.blocked(src, hour.Add(time.Minute)) {
			t.Fatalf("order %v: the network's day-long hold was cut to an hour", order)
		}
		e.g.blockMu.RLock()
		cn := e.g.countries["CN"]
		e.g.blockMu.RUnlock()
		if !cn.Until.Equal(day) {
			t.Fatalf("order %v: the country's hold ends %s, want %s", order, cn.Until, day)
		}
	}
}
