package config

import (
	"errors"
	"strings"
	"testing"
)

// trusted_proxies: CIDRs in front of the API; a bad one, or one that would
// believe anyone, refuses the configuration and names the field.
func TestTrustedProxies(t *testing.T) {
	c := Default()
	if err := Parse([]byte("data: x\ntrusted_proxies: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.10]\n"), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || len(c.TrustedProxies) != 3 {
		t.Fatalf("%v %q", err, c.TrustedProxies)
	}
	if d := Default(); len(d.TrustedProxies) != 0 {
		t.Fatalf("default %q, want none", d.TrustedProxies)
	}
	for _, tc := range []struct{ in, want string }{
		{"0.0.0.0/0", "length 0"},
		{"\"::/0\"", "length 0"},
		{"10.0.0.0/33", "not a CIDR"},
		{"proxy.internal", "not a CIDR"},
		{"\"::ffff:10.0.0.0/104\"", "IPv4-mapped"},
	} {
		c := Default()
		if err := Parse([]byte("data: x\ntrusted_proxies: [10.0.0.0/8, "+tc.in+"]\n"), &c); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "trusted_proxies") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrInvalid naming trusted_proxies and %q", tc.in, err, tc.want)
		}
	}
}
