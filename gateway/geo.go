package gateway

import (
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

func (g *geoDB) close() {
	if g == nil {
		return
	}
	for _, r := range g.readers {
		_ = r.Close()
	}
	g.readers = nil
}
