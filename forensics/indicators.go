package forensics

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/wire"
)

// MaxIndicatorValues bounds the number of values in one indicator set, so that
// hostile or mistaken input cannot make a scope unbounded.
const MaxIndicatorValues = 1_000_000

// Indicators say which events belong to an incident.
//
// Selectors (key ids, token ids, reasons, request ids, sources, ASNs,
// countries) pick events that match ANY of them; filters (routes, subject
// ranges, time window) restrict the picked events and must ALL hold. With no
// selector, every event within the filters is picked. An empty set is refused
// ([ErrNoIndicators]).
type Indicators struct {
	KeyIDs     []string       `json:"key_ids,omitempty"`
	JTIs       []string       `json:"jtis,omitempty"`
	Reasons    []event.Reason `json:"reasons,omitempty"`
	RequestIDs []string       `json:"request_ids,omitempty"`
	// Sources are IP addresses or CIDR prefixes (IPv4 prefixes of any length;
	// IPv6 only as single addresses).
	Sources   []string       `json:"sources,omitempty"`
	ASNs      []uint32       `json:"asns,omitempty"`
	Countries []string       `json:"countries,omitempty"`
	Routes    []string       `json:"routes,omitempty"`
	Subjects  []SubjectRange `json:"subjects,omitempty"`
	// From (inclusive) and To (exclusive) bound the window; zero is open.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

// SubjectRange is an inclusive range of numeric member ids.
type SubjectRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

func (ind *Indicators) selectors() int {
	return len(ind.KeyIDs) + len(ind.JTIs) + len(ind.Reasons) + len(ind.RequestIDs) +
		len(ind.Sources) + len(ind.ASNs) + len(ind.Countries)
}

func badf(kind, value, format string, a ...any) error {
	return fmt.Errorf("%w: %s %q: %s", ErrBadIndicator, kind, value, fmt.Sprintf(format, a...))
}

// Validate checks every indicator and normalises sources and countries. Scope
// calls it before reading any file.
func (ind *Indicators) Validate() error {
	n := ind.selectors() + len(ind.Routes) + len(ind.Subjects)
	if n == 0 && ind.From.IsZero() && ind.To.IsZero() {
		return ErrNoIndicators
	}
	if n > MaxIndicatorValues {
		return fmt.Errorf("%w: %d values, at most %d", ErrBadIndicator, n, MaxIndicatorValues)
	}
	for _, l := range []struct {
		kind string
		v    []string
	}{{"kid", ind.KeyIDs}, {"jti", ind.JTIs}, {"request", ind.RequestIDs}, {"route", ind.Routes}} {
		for _, v := range l.v {
			if v == "" || strings.ContainsFunc(v, isControl) {
				return badf(l.kind, v, "empty or contains control characters")
			}
		}
	}
	for _, r := range ind.Reasons {
		if !slices.Contains(event.Reasons, r) {
			return badf("reason", string(r), "unknown refusal reason")
		}
	}
	for i, s := range ind.Sources {
		c, err := canonicalSource(s)
		if err != nil {
			return badf("source", s, "%v", err)
		}
		ind.Sources[i] = c
	}
	for i, c := range ind.Countries {
		u := strings.ToUpper(c)
		if len(u) != 2 || u[0] < 'A' || u[0] > 'Z' || u[1] < 'A' || u[1] > 'Z' {
			return badf("country", c, "want an ISO 3166 alpha-2 code")
		}
		ind.Countries[i] = u
	}
	for _, r := range ind.Subjects {
		if r.From > r.To {
			return badf("subject", fmt.Sprintf("%d-%d", r.From, r.To), "range start after end")
		}
		if r.To > 1<<63-1 {
			return badf("subject", fmt.Sprintf("%d-%d", r.From, r.To), "beyond the numeric id range")
		}
	}
	if !ind.From.IsZero() && !ind.To.IsZero() && !ind.From.Before(ind.To) {
		return badf("window", ind.From.Format(time.RFC3339)+"/"+ind.To.Format(time.RFC3339), "start not before end")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// canonicalSource returns an address in canonical text or a masked prefix.
func canonicalSource(s string) (string, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", err
		}
		p = p.Masked()
		if !p.Addr().Is4() {
			if p.Bits() == 128 {
				return p.Addr().String(), nil
			}
			return "", fmt.Errorf("IPv6 prefixes are not supported; give addresses")
		}
		return p.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	if a.Zone() != "" {
		return "", fmt.Errorf("zoned address")
	}
	return a.Unmap().String(), nil
}

// ParseIndicators parses command-line indicators, each "kind:value":
//
//	kid:KEYID  jti:TOKENID  reason:not_issued  request:REQUESTID
//	ip:203.0.113.7  ip:203.0.113.0/24  asn:4134 (or AS4134)  country:CN
//	route:/v1/me  subject:1000-2000 (or subject:1234)
//	from:2025-06-24T00:00:00Z  to:2025-11-09T00:00:00Z
//
// It validates the result; the error names the bad indicator.
func ParseIndicators(specs []string) (Indicators, error) {
	var ind Indicators
	for _, spec := range specs {
		kind, v, ok := strings.Cut(strings.TrimSpace(spec), ":")
		if !ok {
			return Indicators{}, badf("indicator", spec, "want kind:value")
		}
		switch strings.ToLower(kind) {
		case "kid", "key":
			ind.KeyIDs = append(ind.KeyIDs, v)
		case "jti", "token":
			ind.JTIs = append(ind.JTIs, v)
		case "reason":
			ind.Reasons = append(ind.Reasons, event.Reason(v))
		case "request", "request_id":
			ind.RequestIDs = append(ind.RequestIDs, v)
		case "ip", "cidr", "source":
			ind.Sources = append(ind.Sources, v)
		case "asn":
			n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(v), "AS"), 10, 32)
			if err != nil {
				return Indicators{}, badf("asn", v, "want a 32-bit AS number")
			}
			ind.ASNs = append(ind.ASNs, uint32(n))
		case "country":
			ind.Countries = append(ind.Countries, v)
		case "route":
			ind.Routes = append(ind.Routes, v)
		case "subject", "subjects":
			r, err := parseRange(v)
			if err != nil {
				return Indicators{}, err
			}
			ind.Subjects = append(ind.Subjects, r)
		case "from", "to":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return Indicators{}, badf(kind, v, "want an RFC 3339 time")
			}
			if strings.EqualFold(kind, "from") {
				ind.From = t
			} else {
				ind.To = t
			}
		default:
			return Indicators{}, badf("indicator", spec, "unknown kind %q", kind)
		}
	}
	if err := ind.Validate(); err != nil {
		return Indicators{}, err
	}
	return ind, nil
}

func parseRange(v string) (SubjectRange, error) {
	a, b, isRange := strings.Cut(v, "-")
	from, err := strconv.ParseUint(a, 10, 63)
	if err != nil {
		return SubjectRange{}, badf("subject", v, "want N or N-M (numeric member ids)")
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(b, 10, 63); err != nil {
			return SubjectRange{}, badf("subject", v, "want N or N-M (numeric member ids)")
		}
	}
	return SubjectRange{From: from, To: to}, nil
}

// ParseIndicatorsJSON parses the JSON form of [Indicators] by the strict rule
// of wire.Unmarshal (unknown fields, duplicate keys and trailing data are
// refused) and validates it.
func ParseIndicatorsJSON(data []byte) (Indicators, error) {
	var ind Indicators
	if err := wire.Unmarshal(data, &ind); err != nil {
		return Indicators{}, fmt.Errorf("%w: %v", ErrBadIndicator, err)
	}
	if err := ind.Validate(); err != nil {
		return Indicators{}, err
	}
	return ind, nil
}
