package clientaddr

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func mustParse(t testing.TB, cidrs ...string) Proxies {
	t.Helper()
	p, err := Parse(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestSource(t *testing.T) {
	lb := mustParse(t, "10.0.0.0/8", "2001:db8:1::/48")
	for _, tc := range []struct {
		name    string
		proxies Proxies
		peer    string
		h       http.Header
		want    string
	}{
		{"no proxies: the peer", nil, "10.0.0.1:5000", header("X-Forwarded-For", "1.2.3.4"), "10.0.0.1"},
		{"untrusted peer's XFF ignored", lb, "192.0.2.7:5000", header("X-Forwarded-For", "1.2.3.4"), "192.0.2.7"},
		{"trusted peer, no XFF: the peer", lb, "10.0.0.1:5000", header(), "10.0.0.1"},
		{"trusted peer: the hop", lb, "10.0.0.1:5000", header("X-Forwarded-For", "1.2.3.4"), "1.2.3.4"},
		{"spoofed left-most hop: right-most untrusted wins", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6, 1.2.3.4"), "1.2.3.4"},
		{"chain of trusted proxies", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.9.9.9, 10.0.0.2"), "1.2.3.4"},
		{"several header lines: the last line first", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6", "X-Forwarded-For", "1.2.3.4"), "1.2.3.4"},
		{"several header lines, the last all proxies", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6, 1.2.3.4", "X-Forwarded-For", "10.0.0.3,10.0.0.2"), "1.2.3.4"},
		{"spaces around hops", lb, "10.0.0.1:5000", header("X-Forwarded-For", "  6.6.6.6 ,\t1.2.3.4  "), "1.2.3.4"},
		{"empty right-most hop stops at the proxy", lb, "10.0.0.1:5000", header("X-Forwarded-For", "1.2.3.4,"), "10.0.0.1"},
		{"empty hop between: nothing left of it", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6, , 10.0.0.2"), "10.0.0.2"},
		{"empty header line", lb, "10.0.0.1:5000", header("X-Forwarded-For", ""), "10.0.0.1"},
		{"garbage hop stops at the last trusted hop", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "6.6.6.6, evil, 10.0.0.2"), "10.0.0.2"},
		{"hop with a port is garbage", lb, "10.0.0.1:5000", header("X-Forwarded-For", "1.2.3.4:80"), "10.0.0.1"},
		{"hop with a zone is garbage", lb, "10.0.0.1:5000", header("X-Forwarded-For", "fe80::1%eth0"), "10.0.0.1"},
		{"bracketed IPv6 hop is garbage", lb, "10.0.0.1:5000", header("X-Forwarded-For", "[2001:db8::9]"), "10.0.0.1"},
		{"IPv4-mapped hop comes back as IPv4", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "::ffff:1.2.3.4"), "1.2.3.4"},
		{"IPv4-mapped proxy hop is a proxy", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "1.2.3.4, ::ffff:10.0.0.2"), "1.2.3.4"},
		{"IPv4-mapped peer is the proxy", lb, "[::ffff:10.0.0.1]:5000",
			header("X-Forwarded-For", "1.2.3.4"), "1.2.3.4"},
		{"IPv4-mapped untrusted peer comes back as IPv4", lb, "[::ffff:192.0.2.7]:5000",
			header("X-Forwarded-For", "1.2.3.4"), "192.0.2.7"},
		{"IPv6 proxy and client", lb, "[2001:db8:1::5]:443",
			header("X-Forwarded-For", "2001:db8:9::1"), "2001:db8:9::1"},
		{"all hops trusted: the left-most", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "10.0.0.3, 10.0.0.2"), "10.0.0.3"},
		{"Forwarded is not read", lb, "10.0.0.1:5000",
			header("Forwarded", "for=1.2.3.4"), "10.0.0.1"},
		{"X-Real-IP is not read", lb, "10.0.0.1:5000",
			header("X-Real-IP", "1.2.3.4"), "10.0.0.1"},
		{"Forwarded and X-Real-IP do not override X-Forwarded-For", lb, "10.0.0.1:5000",
			header("X-Forwarded-For", "1.2.3.4", "Forwarded", "for=6.6.6.6", "X-Real-IP", "6.6.6.7"), "1.2.3.4"},
		{"peer without a port", lb, "192.0.2.7", header("X-Forwarded-For", "1.2.3.4"), "192.0.2.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.proxies.Source(tc.peer, tc.h)
			if got.String() != tc.want {
				t.Errorf("Source(%q, %v) = %s, want %s", tc.peer, tc.h, got, tc.want)
			}
		})
	}
}

func TestSourceLowercaseHeaderKey(t *testing.T) {
	// A header map filled by hand (not by net/http) with a non-canonical
	// key is not read: only the canonical key counts.
	lb := mustParse(t, "10.0.0.0/8")
	h := http.Header{"x-forwarded-for": {"1.2.3.4"}}
	if got := lb.Source("10.0.0.1:1", h); got.String() != "10.0.0.1" {
		t.Errorf("got %s", got)
	}
}

func TestTrusted(t *testing.T) {
	lb := mustParse(t, "10.0.0.0/8", "192.0.2.1")
	for peer, want := range map[string]bool{
		"10.1.2.3:80": true, "[::ffff:10.1.2.3]:80": true, "192.0.2.1:9": true, "192.0.2.2:9": false,
		"11.0.0.1:80": false, "garbage": false, "": false,
	} {
		if got := lb.Trusted(peer); got != want {
			t.Errorf("Trusted(%q) = %v, want %v", peer, got, want)
		}
	}
	if Proxies(nil).Trusted("10.1.2.3:80") {
		t.Error("no proxies, yet a peer is trusted")
	}
}

func TestParse(t *testing.T) {
	for _, ok := range [][]string{nil, {"10.0.0.0/8"}, {"2001:db8::/32", "127.0.0.1"}, {"10.0.0.0/8", "2001:db8::/16"}} {
		if _, err := Parse(ok); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"0.0.0.0/0", "length 0"},
		{"::/0", "length 0"},
		{"10.0.0.0/0", "length 0"},
		{"0.0.0.0/1", "broader than /8"},
		{"128.0.0.0/1", "broader than /8"},
		{"10.0.0.0/7", "broader than /8"},
		{"2000::/3", "broader than /16"},
		{"8000::/1", "broader than /16"},
		{"10.0.0.0/33", "not a CIDR"},
		{"10.0.0.0/8 ", "not a CIDR"},
		{"", "not a CIDR"},
		{"example.com", "not a CIDR"},
		{"fe80::1%eth0", "not a CIDR"},
		{"::ffff:10.0.0.0/104", "IPv4-mapped"},
	} {
		_, err := Parse([]string{"10.0.0.0/8", tc.in})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	p := mustParse(t, "10.1.2.3/8")
	if !p.Contains(netip.MustParseAddr("10.200.0.1")) {
		t.Error("an unmasked prefix does not cover its network")
	}
}

// FuzzSource holds the rule's invariants for any peer and header lines: with
// an untrusted peer the source is the peer; otherwise it is the peer or an
// address written in X-Forwarded-For, unmapped and without a zone, and every
// hop to its right is a trusted proxy.
func FuzzSource(f *testing.F) {
	f.Add("10.0.0.1:5000", "6.6.6.6, 1.2.3.4", "10.0.0.2")
	f.Add("192.0.2.7:1", "1.2.3.4", "")
	f.Add("[::ffff:10.0.0.1]:1", "::ffff:1.2.3.4,,", "fe80::1%eth0")
	f.Add("10.0.0.1:5000", " , garbage ,10.0.0.9", "2001:db8::1")
	lb := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")})
	f.Fuzz(func(t *testing.T, peer, line1, line2 string) {
		h := http.Header{}
		h.Add("X-Forwarded-For", line1)
		h.Add("X-Forwarded-For", line2)
		got := lb.Source(peer, h)
		p := Peer(peer)
		if !lb.Contains(p) {
			if got != p {
				t.Fatalf("untrusted peer %q: source %s", peer, got)
			}
			return
		}
		if got == p {
			return
		}
		if got.Is4In6() || got.Zone() != "" || !got.IsValid() {
			t.Fatalf("source %s is mapped, zoned or invalid", got)
		}
		// got is a hop; every hop right of it is a trusted proxy.
		var hops []string
		for _, l := range []string{line1, line2} {
			hops = append(hops, strings.Split(l, ",")...)
		}
		found := false
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				t.Fatalf("walked past garbage hop %q to %s", hops[i], got)
			}
			if a.Unmap() == got {
				found = true
				break
			}
			if !lb.Contains(a.Unmap()) {
				t.Fatalf("walked past untrusted hop %s to %s", a, got)
			}
		}
		if !found {
			t.Fatalf("source %s is neither the peer nor a hop", got)
		}
	})
}

// FuzzParse: Parse never panics, and what it accepts never believes every
// address.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "0.0.0.0/0", "::/0", "::ffff:0:0/96", "1.2.3.4", "fe80::1%x/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse([]string{s})
		if err != nil {
			return
		}
		if p.Contains(netip.MustParseAddr("0.0.0.0")) && p.Contains(netip.MustParseAddr("255.255.255.255")) {
			t.Fatalf("%q believes every IPv4 address", s)
		}
		if p.Contains(netip.MustParseAddr("::")) && p.Contains(netip.MustParseAddr("ffff::")) {
			t.Fatalf("%q believes every IPv6 address", s)
		}
		for _, n := range p {
			if n.Bits() < MinBits(n.Addr()) {
				t.Fatalf("%q accepted, broader than /%d", s, MinBits(n.Addr()))
			}
		}
	})
}

// BenchmarkSource is the rule's cost per request behind two proxies.
func BenchmarkSource(b *testing.B) {
	lb := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")})
	h := header("X-Forwarded-For", "198.51.100.7, 203.0.113.9, 10.2.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if lb.Source("10.0.0.1:4000", h).String() != "203.0.113.9" {
			b.Fatal("wrong source")
		}
	}
}
