package scenario

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/custos-dev/custos/shop"
)

func tiny(seed uint64) Config {
	c := DefaultConfig()
	c.Seed = seed
	c.Scale = 0.0001
	return c
}

func mustNew(t testing.TB, c Config) *Scenario {
	t.Helper()
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func streamHash(t *testing.T, c Config) ([32]byte, int) {
	s := mustNew(t, c)
	h := sha256.New()
	n := 0
	var r Request
	for s.NextInto(&r) {
		n++
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(r.Time.UnixNano()))
		h.Write(b[:])
		ip := r.SrcIP.As16()
		h.Write(ip[:])
		for _, f := range []string{r.Country, r.UserAgent, r.Method, r.Route, r.Path, r.Member, r.TokenID, r.SessionID} {
			h.Write([]byte(f))
			h.Write([]byte{0})
		}
		binary.LittleEndian.PutUint64(b[:], uint64(r.ASN)<<32|uint64(r.Status)<<16|uint64(r.Kind)<<8|uint64(r.Token))
		h.Write(b[:])
		flags := byte(0)
		for i, f := range []bool{r.Exists, r.Decoy, r.Login} {
			if f {
				flags |= 1 << i
			}
		}
		h.Write([]byte{flags, byte(r.Address + 1)})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n
}

func TestDeterministic(t *testing.T) {
	a, na := streamHash(t, tiny(1))
	b, nb := streamHash(t, tiny(1))
	c, _ := streamHash(t, tiny(2))
	if a != b || na != nb {
		t.Fatalf("same seed, different streams (%d vs %d requests)", na, nb)
	}
	if a == c {
		t.Fatal("different seeds, same stream")
	}
	if na < 20_000 {
		t.Fatalf("only %d requests", na)
	}
}

type count struct{ all, members, decoys, missing, notFound int }

func collect(t *testing.T, s *Scenario, each func(r *Request)) map[Kind]map[string]*count {
	t.Helper()
	out := map[Kind]map[string]*count{}
	var r, prev Request
	n := 0
	for s.NextInto(&r) {
		if n > 0 && r.Time.Before(prev.Time) {
			t.Fatalf("request %d at %v before the previous at %v", n, r.Time, prev.Time)
		}
		n++
		prev = r
		m := out[r.Kind]
		if m == nil {
			m = map[string]*count{}
			out[r.Kind] = m
		}
		c := m[r.Route]
		if c == nil {
			c = &count{}
			m[r.Route] = c
		}
		c.all++
		switch k := s.Population().Kind(r.MemberID); {
		case k == shop.Member:
			c.members++
		case k == shop.Decoy:
			c.decoys++
		default:
			c.missing++
		}
		if r.Status == 404 {
			c.notFound++
		}
		if each != nil {
			each(&r)
		}
	}
	if uint64(n) != s.Emitted() {
		t.Fatalf("emitted %d, counted %d", s.Emitted(), n)
	}
	return out
}

func TestVolumes(t *testing.T) {
	for _, scale := range []float64{0.0001, 0.00037} {
		c := tiny(3)
		c.Scale = scale
		s := mustNew(t, c)
		v := s.Volumes()
		got := collect(t, s, nil)
		cr, ts := got[AttackCrawl], got[AttackTest]
		want := func(name string, got int, want uint64) {
			t.Helper()
			if uint64(got) != want {
				t.Errorf("scale %g %s: %d, want %d", scale, name, got, want)
			}
		}
		round := func(v float64) uint64 { return uint64(v*scale + 0.5) }
		want("members", int(v.Members), round(DefaultMembers))
		want("profile members", cr[shop.RouteProfile].members, v.Members)
		want("profile decoys", cr[shop.RouteProfile].decoys, v.Decoys)
		want("profile missing IDs", cr[shop.RouteProfile].missing, round(DefaultMissingIDs)-v.Decoys)
		want("profile 404s", cr[shop.RouteProfile].notFound, round(DefaultMissingIDs)-v.Decoys)
		want("address list", cr[shop.RouteAddresses].all, round(DefaultAddressList))
		want("address list missing", cr[shop.RouteAddresses].missing, 0)
		want("address edit", cr[shop.RouteAddressEdit].all, round(DefaultAddressEdit))
		want("orders", cr[shop.RouteOrders].all, round(DefaultOrders))
		tests := 0
		for _, c := range ts {
			tests += c.all
		}
		want("tests", tests, DefaultTests)
		normal := 0
		for route, c := range got[Normal] {
			normal += c.all
			if c.missing+c.decoys != 0 {
				t.Errorf("normal traffic on %s for %d non-members", route, c.missing+c.decoys)
			}
		}
		days := c.NormalEnd.Sub(c.NormalStart).Hours() / 24
		if exp := days * float64(v.NormalPerDay); float64(normal) < exp*0.8 || float64(normal) > exp*1.2 {
			t.Errorf("scale %g: %d normal requests, want about %.0f", scale, normal, exp)
		}
		if exp := s.Expected(); float64(s.Emitted()) < float64(exp)*0.95 || float64(s.Emitted()) > float64(exp)*1.05 {
			t.Errorf("Expected %d, emitted %d", exp, s.Emitted())
		}
	}
}

func TestAttackTimes(t *testing.T) {
	c := tiny(4)
	s := mustNew(t, c)
	tl := s.Timeline()
	var first, firstCrawl, lastCrawl time.Time
	attackNets := map[netip.Prefix]Network{}
	for _, n := range s.Networks() {
		if n.Attacker {
			attackNets[n.Prefix] = n
		}
	}
	used := map[netip.Prefix]bool{}
	collect(t, s, func(r *Request) {
		if !r.Kind.Attack() {
			if r.Token != IssuedByLogin || r.SessionID == "" || r.Country != "KR" {
				t.Fatalf("normal request %+v", r)
			}
			return
		}
		if r.Token != Forged || r.SessionID != "" || r.Login || r.Country == "KR" {
			t.Fatalf("attack request %+v", r)
		}
		p := netip.PrefixFrom(r.SrcIP, 24).Masked()
		if n, ok := attackNets[p]; !ok || n.Country != r.Country || n.ASN != r.ASN {
			t.Fatalf("attack from %v (%s, %d) not in Networks", r.SrcIP, r.Country, r.ASN)
		}
		used[p] = true
		if first.IsZero() {
			first = r.Time
		}
		switch r.Kind {
		case AttackTest:
			if r.Time.Before(c.TestsStart) || !r.Time.Before(c.CrawlStart) {
				t.Fatalf("test request at %v", r.Time)
			}
		case AttackCrawl:
			if r.Time.Before(c.CrawlStart) || !r.Time.Before(c.CrawlEnd) {
				t.Fatalf("crawl request at %v", r.Time)
			}
			if firstCrawl.IsZero() {
				firstCrawl = r.Time
			}
			lastCrawl = r.Time
		}
	})
	if !first.Equal(tl.FirstForged) {
		t.Fatalf("first forged %v, timeline says %v", first, tl.FirstForged)
	}
	if first.Sub(c.TestsStart) > 24*time.Hour*70/1000*2 { // within two test spacings
		t.Fatalf("first test %v, long after %v", first, c.TestsStart)
	}
	// The profile crawl alone sends a request every ~25 minutes at this scale.
	if firstCrawl.Sub(c.CrawlStart) > time.Hour || c.CrawlEnd.Sub(lastCrawl) > time.Hour {
		t.Fatalf("crawl from %v to %v", firstCrawl, lastCrawl)
	}
	if len(used) < 100 {
		t.Fatalf("crawler used %d /24 networks", len(used))
	}
	if !tl.KeyCreated.Before(tl.CustodianLeaves) || !tl.CustodianLeaves.Before(tl.FirstForged) || !tl.CrawlEnd.Before(tl.Awareness) || !tl.Awareness.Before(tl.Revoked) {
		t.Fatalf("timeline out of order: %+v", tl)
	}
}

func TestNormalTraffic(t *testing.T) {
	c := tiny(5)
	c.NormalPerDay = 50_000_000 // 5,000 a day at this scale
	c.NormalEnd = c.NormalStart.AddDate(0, 0, 30)
	c.Tests = 0
	c.CrawlStart, c.CrawlEnd = c.NormalEnd.AddDate(0, 0, 1), c.NormalEnd.AddDate(0, 0, 2)
	c.TestsStart = c.CrawlStart
	s := mustNew(t, c)
	var byHour [24]int
	sessions := map[string]int{}
	var normal, notFound int
	collect(t, s, func(r *Request) {
		if r.Kind != Normal {
			return
		}
		normal++
		if r.Status == 404 {
			notFound++
		}
		byHour[r.Time.In(KST).Hour()]++
		n := sessions[r.SessionID]
		if r.Login != (n == 0) {
			t.Fatalf("session %s request %d: login %v", r.SessionID, n, r.Login)
		}
		sessions[r.SessionID] = n + 1
	})
	if rate := float64(notFound) / float64(normal); rate < c.NormalNotFound*0.7 || rate > c.NormalNotFound*1.3 {
		t.Errorf("404 rate %.4f, want about %.4f", rate, c.NormalNotFound)
	}
	if night, evening := byHour[4], byHour[21]; evening < 5*night {
		t.Errorf("daily curve flat: 04h %d, 21h %d", night, evening)
	}
	if mean := float64(normal) / float64(len(sessions)); mean < 3.5 || mean > 4.5 {
		t.Errorf("%.2f pages per session, want about 4", mean)
	}
}

// Every request's expected status is what the sample shop answers.
func TestStatusMatchesShop(t *testing.T) {
	s := mustNew(t, tiny(6))
	h, err := shop.New(s.Population())
	if err != nil {
		t.Fatal(err)
	}
	collect(t, s, func(r *Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, r.Path, nil))
		if rec.Code != r.Status {
			t.Fatalf("%s: shop says %d, stream says %d", r.Path, rec.Code, r.Status)
		}
		if id, ok := shop.ParseMember(r.Member); !ok || id != r.MemberID {
			t.Fatalf("member %q vs %d", r.Member, r.MemberID)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig()
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"ok/default", func(c *Config) {}},
		{"ok/no-normal", func(c *Config) { c.NormalPerDay = 0; c.NormalEnd = time.Time{} }},
		{"fail/scale", func(c *Config) { c.Scale = 0 }},
		{"fail/members", func(c *Config) { c.Members = 0 }},
		{"fail/decoys", func(c *Config) { c.MissingIDs = 10; c.Scale = 0.0001 }},
		{"fail/crawl-order", func(c *Config) { c.CrawlEnd = c.CrawlStart }},
		{"fail/tests-before-key", func(c *Config) { c.TestsStart = c.KeyCreated.Add(-time.Hour) }},
		{"fail/networks", func(c *Config) { c.AttackNetworks = 0 }},
		{"fail/rotate", func(c *Config) { c.RotateEvery = 0 }},
		{"fail/not-found", func(c *Config) { c.NormalNotFound = 0.5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			err := c.Validate()
			if ok := tt.name[:3] == "ok/"; ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("err %v is not ErrConfig", err)
			}
			if _, nerr := New(c); (nerr == nil) != (err == nil) {
				t.Fatalf("New disagrees: %v", nerr)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	s := mustNew(t, tiny(8))
	routes := map[string]shop.Route{}
	for _, r := range shop.Routes() {
		routes[r.Pattern] = r
	}
	var r Request
	for i := 0; i < 2000 && s.NextInto(&r); i++ {
		a := r.Access("gw1")
		if a.Gateway != "gw1" || a.Subject != r.Member || a.Token.Sub != r.Member || a.Token.JTI != r.TokenID ||
			a.SrcIP != r.SrcIP.String() || a.Route != r.Route || a.Path != r.Path || !a.Time.Equal(r.Time) || a.Status != r.Status {
			t.Fatalf("event %+v for request %+v", a, r)
		}
		if want := routes[r.Route].DataClasses; len(a.DataClasses) != len(want) || a.DataClasses[0] != want[0] {
			t.Fatalf("classes %v, want %v", a.DataClasses, want)
		}
		if a.RequestID != "r"+strconv.Itoa(i+1) || r.Seq != uint64(i+1) {
			t.Fatalf("request id %s, seq %d at %d", a.RequestID, r.Seq, i)
		}
	}
}
