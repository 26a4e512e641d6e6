package gateway

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/geodb"
)

// writeCountriesMMDB writes a GeoIP database placing each network in its
// country.
func writeCountriesMMDB(t *testing.T, dir string, m map[string]string) string {
	t.Helper()
	nets, err := geodb.Countries(m)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nets {
		nets[i].ASN = 16509
	}
	p := filepath.Join(dir, "countries.mmdb")
	if err := geodb.Write(p, "custos-test", nets); err != nil {
		t.Fatal(err)
	}
	return p
}

func countryHold(id, cc string) Hold {
	return Hold{ID: id, Action: HoldBlockCountry, Target: cc, Until: t0.Add(time.Hour), Reason: "custos alert " + id}
}

// A country hold refuses, as blocked_source, every request whose source
// (the right-most untrusted X-Forwarded-For hop from a trusted proxy)
// the GeoIP databases place in the held country, whatever network it comes
// from and however the header is spelt; other countries are served, and the
// access event keeps the lookup.
func TestCountryHold(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	cfg.GeoIP = []string{writeCountriesMMDB(t, dir, map[string]string{
		"18.204.0.0/16": "US", "159.65.0.0/16": "US", "13.212.0.0/16": "SG", "1.2.3.0/24": "KR"})}
	e := newEnv(t, cfg)
	good := e.issue(t, claimsFor("m-1"))
	// Before any hold, no lookup is made ahead of the decision.
	e.do("GET", addr, good, "X-Forwarded-For", "18.204.1.1")
	if ev := e.pub.last(t); ev.Verdict != event.Allow || ev.Country != "US" {
		t.Fatalf("before the hold: %+v", ev)
	}
	if err := e.g.Apply(countryHold("h-us", "US")); err != nil {
		t.Fatal(err)
	}
	for _, hdr := range [][]string{
		{"X-Forwarded-For", "18.204.7.9"},
		{"x-forwarded-for", "159.65.200.1"},
		{"X-FORWARDED-FOR", "::ffff:18.204.9.9"},
		{"X-Forwarded-For", "1.2.3.4, 18.204.33.2"},
		{"X-Forwarded-For", "18.204.44.5, 127.0.0.9"},
		{"X-Forwarded-For", "1.2.3.4", "X-Forwarded-For", "18.204.55.6"},
		{"X-Forwarded-For", "18.204.66.7", "X-Forwarded-For", "127.0.0.3, 127.0.0.4"},
	} {
		before := e.upstream.Load()
		assertRefused(t, e, e.do("GET", addr, good, hdr...), before, event.ReasonBlockedSource)
		if ev := e.pub.last(t); ev.Country != "US" || ev.ASN != 16509 {
			t.Errorf("%v: event %s %d, want the lookup kept", hdr, ev.Country, ev.ASN)
		}
	}
	for _, hdr := range [][]string{
		{"X-Forwarded-For", "1.2.3.4"},
		{"X-Forwarded-For", "13.212.1.1"},
		{"X-Forwarded-For", "18.204.7.9, 1.2.3.4"},
		{"X-Forwarded-For", "9.9.9.9"}, // unknown to the database
	} {
		if w := e.do("GET", addr, good, hdr...); w.Code != 200 {
			t.Errorf("%v: status %d, want served", hdr, w.Code)
		}
	}
	if bs := e.g.CountryBlocks(); len(bs) != 1 || bs[0].Country != "US" {
		t.Errorf("country blocks %+v", bs)
	}
	// A hold that has ended refuses nothing.
	e.g.BlockCountry("US", t0, "ended")
	if w := e.do("GET", addr, good, "X-Forwarded-For", "18.204.7.9"); w.Code != 200 {
		t.Errorf("ended hold: status %d", w.Code)
	}
	e.g.UnblockCountry("US")
	if e.g.ncountry.Load() != 0 {
		t.Error("country count not back to 0")
	}
}

// A gateway without a GeoIP database cannot enforce a country hold: it
// serves as before and counts the hold it cannot enforce.
func TestCountryHoldWithoutGeoIP(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	e := newEnv(t, cfg)
	good := e.issue(t, claimsFor("m-1"))
	if err := e.g.Apply(countryHold("h-us", "US")); err != nil {
		t.Fatal(err)
	}
	if w := e.do("GET", addr, good, "X-Forwarded-For", "18.204.7.9"); w.Code != 200 {
		t.Fatalf("status %d, want served", w.Code)
	}
	if n := testutil.ToFloat64(e.g.unheld); n != 1 {
		t.Fatalf("unenforced holds counted %v, want 1", n)
	}
}

// A country hold reaches a standalone gateway over the containment stream.
func TestRemoteCountryHold(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.0.0.0/8"}
	cfg.GeoIP = []string{writeCountriesMMDB(t, dir, map[string]string{"18.204.0.0/16": "US"})}
	src := &holdSource{}
	srv := httptest.NewServer(HoldStreamHandler(src.snapshot, src.subscribe))
	defer srv.Close()
	e := newEnv(t, cfg)
	rh, err := NewRemoteHolds([]string{srv.URL}, srv.Client(), e.g)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rh.Run(ctx)
	for deadline := time.Now().Add(5 * time.Second); !rh.Fresh(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stream not followed")
		}
	}
	src.add(countryHold("h-us", "US"), true)
	for deadline := time.Now().Add(5 * time.Second); len(e.g.CountryBlocks()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("country hold not applied")
		}
	}
	good := e.issue(t, claimsFor("m-1"))
	before := e.upstream.Load()
	assertRefused(t, e, e.do("GET", addr, good, "X-Forwarded-For", "18.204.7.9"), before, event.ReasonBlockedSource)
}

func TestParseCountryHold(t *testing.T) {
	good := `{"id":"h1","action":"block_country","target":"US","until":"2025-06-24T04:00:00Z","reason":"r"}`
	h, err := ParseHold([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cc, err := h.Country(); err != nil || cc != "US" {
		t.Fatalf("country %q, %v", cc, err)
	}
	for _, target := range []string{`us`, `Us`, `USA`, `U`, ``, `U1`, `198.51.100.7/32`, ` US`, `ÜS`} {
		bad := strings.Replace(good, `"target":"US"`, `"target":"`+target+`"`, 1)
		if _, err := ParseHold([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
