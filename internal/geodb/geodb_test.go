package geodb

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"
)

// What Write puts in is what a MaxMind reader, as the gateway uses it,
// reads back; an address outside every network is not found.
func TestWriteReadsBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "geo.mmdb")
	nets, err := Countries(map[string]string{"18.204.0.0/16": "US"})
	if err != nil {
		t.Fatal(err)
	}
	nets = append(nets, Network{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Country: "KR", ASN: 4766, Org: "Korea Telecom"})
	if err := Write(p, "custos-test", nets); err != nil {
		t.Fatal(err)
	}
	r, err := maxminddb.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var rec struct {
		Country struct {
			ISOCode string `maxminddb:"iso_code"`
		} `maxminddb:"country"`
		ASN uint32 `maxminddb:"autonomous_system_number"`
		Org string `maxminddb:"autonomous_system_organization"`
	}
	for _, c := range []struct {
		ip, country string
		asn         uint32
		org         string
	}{{"18.204.7.9", "US", 0, ""}, {"198.51.100.20", "KR", 4766, "Korea Telecom"}, {"8.8.8.8", "", 0, ""}} {
		rec.Country.ISOCode, rec.ASN, rec.Org = "", 0, ""
		if err := r.Lookup(netip.MustParseAddr(c.ip)).Decode(&rec); err != nil {
			t.Fatal(err)
		}
		if rec.Country.ISOCode != c.country || rec.ASN != c.asn || rec.Org != c.org {
			t.Errorf("%s: got %+v, want %s %d %q", c.ip, rec, c.country, c.asn, c.org)
		}
	}
	if _, err := Countries(map[string]string{"not-a-cidr": "US"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}
