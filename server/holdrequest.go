package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/wire"
)

// An operator's hold (POST /v1/containment) travels as detection's do
// (addHold: the audit journal, the store, every replica and gateway); these
// are the bounds its request is held to.
const (
	// MaxHoldFor is the longest hold an operator may place by hand, as
	// for detection's blocks (7 days); a longer one is placed again.
	MaxHoldFor = 7 * 24 * time.Hour
	// MaxHoldReason bounds the reason, in bytes.
	MaxHoldReason = 512
	// MinHoldBits4 and MinHoldBits6 are the broadest prefixes a
	// block_source hold may name: a /8 of IPv4, a /32 of IPv6 (a regional
	// registry's allocation). Anything broader would cut off a good share
	// of the shop's own customers.
	MinHoldBits4 = 8
	MinHoldBits6 = 32
	maxHoldBody  = 4 << 10
)

// ErrBadHoldRequest marks a hold request that does not parse or breaks a
// bound; ErrHomeCountry (a country of detect.allowed_countries) is the
// other refusal.
var ErrBadHoldRequest = errors.New("invalid containment hold request")

// HoldRequest is the body of POST /v1/containment.
type HoldRequest struct {
	Action string `json:"action"` // block_source or block_country
	Target string `json:"target"` // a prefix or address, or an ISO 3166-1 alpha-2 country
	For    string `json:"for"`    // a Go duration, e.g. "1h"
	Reason string `json:"reason"`
}

// ParseHoldRequest reads an operator's hold request strictly (unknown
// fields, duplicate keys and trailing data refused) and returns the
// normalised action, target (a masked prefix; an address becomes its /32 or
// /128; an IPv4-mapped prefix its IPv4 one; a country in upper case),
// duration and reason. It does not know the allowed countries: the caller
// checks those.
func ParseHoldRequest(b []byte) (action, target string, dur time.Duration, reason string, err error) {
	bad := func(format string, a ...any) (string, string, time.Duration, string, error) {
		return "", "", 0, "", fmt.Errorf("%w: %s", ErrBadHoldRequest, fmt.Sprintf(format, a...))
	}
	if len(b) > maxHoldBody {
		return bad("body larger than %d bytes", maxHoldBody)
	}
	var r HoldRequest
	if err := wire.Unmarshal(b, &r); err != nil {
		return bad("%v", err)
	}
	switch r.Action {
	case gateway.HoldBlockSource:
		p, err := holdPrefix(r.Target)
		if err != nil {
			return bad("%v", err)
		}
		target = p.String()
	case gateway.HoldBlockCountry:
		cc := strings.ToUpper(r.Target)
		if !isISOCountry(cc) {
			return bad("target %q is not an ISO 3166-1 alpha-2 country code", r.Target)
		}
		target = cc
	case "":
		return bad("action is required (block_source or block_country)")
	default:
		return bad("unknown action %q (block_source or block_country)", r.Action)
	}
	if r.For == "" {
		return bad(`"for" is required (a duration such as "1h")`)
	}
	dur, err = time.ParseDuration(r.For)
	if err != nil {
		return bad(`"for": %v`, err)
	}
	if dur <= 0 || dur > MaxHoldFor {
		return bad(`"for" must be above 0 and at most %s`, MaxHoldFor)
	}
	if msg := badHoldReason(r.Reason); msg != "" {
		return bad("%s", msg)
	}
	return r.Action, target, dur, r.Reason, nil
}

// holdPrefix parses a block_source target: a prefix or a single address,
// no broader than MinHoldBits4 / MinHoldBits6.
func holdPrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("target %q is not a prefix: %v", s, err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("target %q is neither a prefix nor an address", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		// Gateways compare IPv4 sources with IPv4 prefixes: an
		// IPv4-mapped prefix is held as the IPv4 one it names.
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("target %q spans IPv4-mapped and other IPv6 space", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	least := MinHoldBits6
	if p.Addr().Is4() {
		least = MinHoldBits4
	}
	if p.Bits() < least {
		return netip.Prefix{}, fmt.Errorf("target %s is broader than /%d: a hold that wide would cut off the shop's own customers", p, least)
	}
	return p, nil
}

// isISOCountry reports whether cc is an assigned ISO 3166-1 alpha-2 code.
func isISOCountry(cc string) bool {
	if len(cc) != 2 || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' {
		return false
	}
	for i := 0; i+2 <= len(isoCountries); i += 3 {
		if isoCountries[i:i+2] == cc {
			return true
		}
	}
	return false
}

// isoCountries are the 249 officially assigned ISO 3166-1 alpha-2 codes
// and XK (Kosovo, as GeoIP databases name it): no other user-assigned code
// (AA, QM–QZ, XA–XZ, ZZ), no reserved or withdrawn one (EU, UK, UN, SU, YU).
const isoCountries = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE " +
	"BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD " +
	"CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM " +
	"DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF " +
	"GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU " +
	"ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN " +
	"KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME " +
	"MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA " +
	"NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM " +
	"PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI " +
	"SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK " +
	"TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI " +
	"VN VU WF WS XK YE YT ZA ZM ZW"

// addHoldByHand serves POST /v1/containment: an operator's hold, placed on
// every gateway as detection's holds are, attributed to the admin
// credential.
func (s *Server) addHoldByHand(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxHoldBody+1))
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return
	}
	action, target, dur, reason, err := ParseHoldRequest(b)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if action == gateway.HoldBlockCountry && s.homeCountry(target) {
		wire.WriteError(w, http.StatusBadRequest, "allowed_country",
			target+" is one of detect.allowed_countries: containment never blocks the shop's own customers")
		return
	}
	var id [8]byte
	rand.Read(id[:])
	now := s.now().UTC()
	h := gateway.Hold{ID: "op-" + hex.EncodeToString(id[:]), Action: action, Target: target, Until: now.Add(dur),
		Reason: reason, Created: now, Actor: actorOf(r.Context())}
	if err := s.addHold(r.Context(), h); err != nil {
		if errors.Is(err, ErrHomeCountry) {
			wire.WriteError(w, http.StatusBadRequest, "allowed_country", err.Error())
			return
		}
		s.Log.Error("containment hold not placed", "id", h.ID, "action", action, "target", target, "err", err)
		wire.WriteError(w, http.StatusServiceUnavailable, "containment_failed", "the hold could not be journaled, stored and announced; retry")
		return
	}
	s.Log.Info("containment hold placed by hand", "id", h.ID, "action", action, "target", target, "until", h.Until, "actor", h.Actor)
	wire.WriteJSON(w, http.StatusCreated, h)
}

// badHoldReason says what is wrong with the reason of a hold or a release,
// or "" when nothing is: required (not blank), at most MaxHoldReason bytes,
// valid UTF-8 with no control or format character.
func badHoldReason(reason string) string {
	switch {
	case strings.TrimSpace(reason) == "":
		return "reason is required"
	case len(reason) > MaxHoldReason:
		return fmt.Sprintf("reason longer than %d bytes", MaxHoldReason)
	case !utf8.ValidString(reason) || strings.ContainsFunc(reason, func(c rune) bool { return unicode.IsControl(c) || unicode.Is(unicode.Cf, c) }):
		return "reason holds a control or format character (line breaks, bidirectional overrides) or invalid UTF-8"
	}
	return ""
}
