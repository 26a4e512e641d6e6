package gateway

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/oschwald/maxminddb-golang/v2"
)

// geoDB reads country and ASN from MaxMind-format databases.
type geoDB struct {
	readers []*maxminddb.Reader
}

type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	ASN uint32 `maxminddb:"autonomous_system_number"`
}

func openGeo(paths []string) (*geoDB, error) {
	g := &geoDB{}
	for _, p := range paths {
		r, err := maxminddb.Open(p)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("failed to open GeoIP database %s: %w", p, err)
		}
		g.readers = append(g.readers, r)
	}
	return g, nil
}

// lookup returns the ISO country code and ASN of ip, empty when unknown.
func (g *geoDB) lookup(ip netip.Addr) (country string, asn uint32) {
	for _, r := range g.readers {
		var rec geoRecord
		if err := r.Lookup(ip).Decode(&rec); err != nil {
			continue
		}
		if country == "" {
			country = rec.Country.ISOCode
		}
		if asn == 0 {
			asn = rec.ASN
		}
	}
	return country, asn
}

// Location is where an address is, by the GeoIP databases.
type Location struct {
	Country string // ISO 3166-1 alpha-2
	ASN     uint32
	Org     string // the autonomous system's organisation
}

type geoOrgRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	ASN uint32 `maxminddb:"autonomous_system_number"`
	Org string `maxminddb:"autonomous_system_organization"`
}

// locate is lookup with the AS organisation, for people reading it.
func (g *geoDB) locate(ip netip.Addr) Location {
	var loc Location
	if g == nil {
		return loc
	}
	for _, r := range g.readers {
		var rec geoOrgRecord
		if err := r.Lookup(ip).Decode(&rec); err != nil {
			continue
		}
		loc.Country = cmp.Or(loc.Country, rec.Country.ISOCode)
		loc.ASN = cmp.Or(loc.ASN, rec.ASN)
		loc.Org = cmp.Or(loc.Org, rec.Org)
	}
	return loc
}

// Locate returns the country and network of ip from the gateway's GeoIP
// databases (Config.GeoIP); the zero Location when none knows it.
func (g *Gateway) Locate(ip netip.Addr) Location { return g.geo.locate(ip.Unmap()) }

func (g *geoDB) close() {
	if g == nil {
		return
	}
	for _, r := range g.readers {
		_ = r.Close()
	}
	g.readers = nil
}
