// Package clientaddr finds the client address of an HTTP request behind trusted
// proxies: the peer, or the right-most X-Forwarded-For hop no trusted proxy owns.
package clientaddr

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the networks whose X-Forwarded-For is believed. Empty (nil)
// believes no one: the client is the peer.
type Proxies []netip.Prefix

// New believes the proxies in nets, as given (masked).
func New(nets []netip.Prefix) Proxies {
	var p Proxies
	for _, n := range nets {
		p = append(p, n.Masked())
	}
	return p
}

// ErrProxy is a proxy network Parse refuses.
var ErrProxy = errors.New("trusted proxy")

// Parse reads CIDRs ("10.0.0.0/8", "2001:db8::/32"; a bare address is one
// host). It refuses what would believe anyone: a prefix of length 0
// (0.0.0.0/0, ::/0) or broader than MinBits (so no few prefixes can add up to
// every address), and IPv4-mapped IPv6 prefixes (addresses are compared
// unmapped, so such a prefix would never match; write the IPv4 form).
func Parse(cidrs []string) (Proxies, error) {
	var nets []netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%w %q: not a CIDR (%v)", ErrProxy, s, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("%w %q: a prefix of length 0 believes every peer's X-Forwarded-For, so anyone could name any address; list the proxies' own networks", ErrProxy, s)
		}
		if min := MinBits(p.Addr()); p.Bits() < min {
			return nil, fmt.Errorf("%w %q: broader than /%d; a proxy network that wide (or a few such halves, 0.0.0.0/1 and 128.0.0.0/1) believes nearly every peer; list the proxies' own networks", ErrProxy, s, min)
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%w %q: an IPv4-mapped prefix; write it as IPv4", ErrProxy, s)
		}
		nets = append(nets, p)
	}
	return New(nets), nil
}

// MinBits is the shortest prefix Parse believes for a's family: /8 for IPv4
// (a private 10.0.0.0/8 is the broadest proxy network in use), /16 for IPv6.
func MinBits(a netip.Addr) int {
	if a.Is4() {
		return 8
	}
	return 16
}

// Contains reports whether ip is a believed proxy's.
func (p Proxies) Contains(ip netip.Addr) bool {
	for _, n := range p {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// Trusted reports whether the connection's peer ("ip:port" or "ip") is a
// believed proxy.
func (p Proxies) Trusted(peer string) bool {
	return len(p) > 0 && p.Contains(Peer(peer))
}

// Source is the client address of a request from peer with headers h: the
// peer, unless the peer is a believed proxy; then the right-most
// X-Forwarded-For hop (header lines read last to first, each right to left)
// that is not a believed proxy. A hop that is not a bare address (empty, a
// port, a zone, garbage) stops the walk: the source is the last believed hop
// before it, never anything to its left. Forwarded (RFC 7239) and X-Real-IP
// are not read. IPv4-mapped IPv6 addresses come back as IPv4.
func (p Proxies) Source(peer string, h http.Header) netip.Addr {
	ip := Peer(peer)
	if len(p) == 0 || !p.Contains(ip) {
		return ip
	}
	xff := h.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil || hop.Zone() != "" {
				return ip
			}
			ip = hop.Unmap()
			if !p.Contains(ip) {
				return ip
			}
		}
	}
	return ip
}

// Peer parses a connection's address, "ip:port" or "ip", unmapped; the zero
// Addr when it is neither.
func Peer(peer string) netip.Addr {
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		return ap.Addr().Unmap()
	}
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	ip, _ := netip.ParseAddr(peer)
	return ip.Unmap()
}
