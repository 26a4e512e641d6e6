// Package geodb writes MaxMind-format GeoIP databases of chosen networks,
// for the replay and for tests: the gateway reads them as it reads GeoLite2.
//
// It wraps github.com/maxmind/mmdbwriter (MaxMind's own writer) with the
// record shape the gateway decodes: country ISO code, ASN and AS organisation.
package geodb

import (
	"fmt"
	"net"
	"os"

	"net/netip"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Network is one address block and where a GeoIP lookup places it.
type Network struct {
	Prefix  netip.Prefix
	Country string // ISO 3166-1 alpha-2
	ASN     uint32 // 0: none recorded
	Org     string // the AS organisation; "": none recorded
}

// Write writes a database of nets to path. Reserved blocks (documentation,
// private ranges) are allowed, since tests and the replay use them.
func Write(path, dbType string, nets []Network) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		return err
	}
	for _, n := range nets {
		_, ipn, err := net.ParseCIDR(n.Prefix.Masked().String())
		if err != nil {
			return fmt.Errorf("geodb: %w", err)
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(n.Country)}}
		if n.ASN != 0 {
			rec["autonomous_system_number"] = mmdbtype.Uint32(n.ASN)
		}
		if n.Org != "" {
			rec["autonomous_system_organization"] = mmdbtype.String(n.Org)
		}
		if err := tree.Insert(ipn, rec); err != nil {
			return fmt.Errorf("geodb: %s: %w", n.Prefix, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// Countries lists one Network per CIDR of m (CIDR → country), for tests.
func Countries(m map[string]string) ([]Network, error) {
	out := make([]Network, 0, len(m))
	for cidr, cc := range m {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return nil, fmt.Errorf("geodb: %w", err)
		}
		out = append(out, Network{Prefix: p, Country: cc})
	}
	return out, nil
}
