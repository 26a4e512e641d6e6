package forensics

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseIndicators(t *testing.T) {
	tests := []struct {
		name  string
		specs []string
		err   error
		check func(Indicators) bool
	}{
		{"ok/kid", []string{"kid:k1"}, nil, func(i Indicators) bool { return i.KeyIDs[0] == "k1" }},
		{"ok/asn-prefix", []string{"asn:AS4134"}, nil, func(i Indicators) bool { return i.ASNs[0] == 4134 }},
		{"ok/cidr-masked", []string{"ip:203.0.113.9/24"}, nil, func(i Indicators) bool { return i.Sources[0] == "203.0.113.0/24" }},
		{"ok/ipv6-canonical", []string{"ip:2001:DB8:0:0::1"}, nil, func(i Indicators) bool { return i.Sources[0] == "2001:db8::1" }},
		{"ok/mapped", []string{"ip:::ffff:10.0.0.1"}, nil, func(i Indicators) bool { return i.Sources[0] == "10.0.0.1" }},
		{"ok/country-upper", []string{"country:cn"}, nil, func(i Indicators) bool { return i.Countries[0] == "CN" }},
		{"ok/subject-single", []string{"subject:42"}, nil, func(i Indicators) bool { return i.Subjects[0] == SubjectRange{42, 42} }},
		{"ok/window", []string{"from:2025-06-24T00:00:00Z", "to:2025-11-09T00:00:00+09:00"}, nil,
			func(i Indicators) bool { return i.To.Equal(time.Date(2025, 11, 8, 15, 0, 0, 0, time.UTC)) }},
		{"ok/reason", []string{"reason:not_issued"}, nil, func(i Indicators) bool { return i.Reasons[0] == "not_issued" }},
		{"fail/none", nil, ErrNoIndicators, nil},
		{"fail/no-colon", []string{"k-stolen"}, ErrBadIndicator, nil},
		{"fail/kind", []string{"colour:red"}, ErrBadIndicator, nil},
		{"fail/reason", []string{"reason:because"}, ErrBadIndicator, nil},
		{"fail/ip", []string{"ip:300.1.1.1"}, ErrBadIndicator, nil},
		{"fail/ipv6-prefix", []string{"ip:2001:db8::/32"}, ErrBadIndicator, nil},
		{"fail/asn", []string{"asn:ASX"}, ErrBadIndicator, nil},
		{"fail/asn-range", []string{"asn:4294967296"}, ErrBadIndicator, nil},
		{"fail/country", []string{"country:KOR"}, ErrBadIndicator, nil},
		{"fail/subject-order", []string{"subject:9-1"}, ErrBadIndicator, nil},
		{"fail/subject-text", []string{"subject:abc"}, ErrBadIndicator, nil},
		{"fail/window-order", []string{"from:2025-06-24T00:00:00Z", "to:2025-06-23T00:00:00Z"}, ErrBadIndicator, nil},
		{"fail/time", []string{"from:yesterday"}, ErrBadIndicator, nil},
		{"fail/empty-kid", []string{"kid:"}, ErrBadIndicator, nil},
		{"fail/control", []string{"route:/v1/\x00"}, ErrBadIndicator, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, err := ParseIndicators(tc.specs)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %v, want %v", err, tc.err)
				}
				last := ""
				if len(tc.specs) > 0 {
					parts := strings.SplitN(tc.specs[len(tc.specs)-1], ":", 2)
					last = parts[len(parts)-1]
				}
				if q := strconv.Quote(last); !strings.Contains(err.Error(), q[1:len(q)-1]) && !strings.Contains(tc.name, "window") {
					t.Fatalf("error %q does not name the value", err)
				}
				return
			}
			if err != nil || !tc.check(ind) {
				t.Fatalf("got %+v, %v", ind, err)
			}
		})
	}
}

func TestParseIndicatorsJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		err  error
	}{
		{"ok/full", `{"key_ids":["k"],"sources":["10.0.0.0/8"],"asns":[1],"subjects":[{"from":1,"to":5}],"from":"2025-06-24T00:00:00Z"}`, nil},
		{"fail/unknown-field", `{"kid":["k"]}`, ErrBadIndicator},
		{"fail/trailing", `{"key_ids":["k"]} {}`, ErrBadIndicator},
		{"fail/duplicate", `{"key_ids":["k"],"key_ids":["j"]}`, ErrBadIndicator},
		{"fail/duplicate-case", `{"key_ids":["k"],"KEY_IDS":["j"]}`, ErrBadIndicator},
		{"fail/miscased", `{"Key_Ids":["k"]}`, ErrBadIndicator},
		{"fail/nested-duplicate", `{"subjects":[{"from":1,"to":5,"TO":9}]}`, ErrBadIndicator},
		{"fail/type", `{"asns":["AS1"]}`, ErrBadIndicator},
		{"fail/empty", `{}`, ErrNoIndicators},
		{"fail/bad-source", `{"sources":["nope"]}`, ErrBadIndicator},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIndicatorsJSON([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
		})
	}
}

func TestSplitSources(t *testing.T) {
	exact, ranges := splitSources([]string{"203.0.113.128/25", "10.0.0.0/8", "172.16.0.0/12", "1.2.3.4",
		"10.1.0.0/16", "203.0.114.0/24", "2001:db8::1", "0.0.0.0/0"})
	if !slices.Equal(exact, []string{"1.2.3.4", "2001:db8::1"}) {
		t.Fatalf("exact: %v", exact)
	}
	if want := [][2]uint32{{0, 1<<32 - 1}}; !slices.Equal(ranges, want) {
		t.Fatalf("ranges with /0: %v", ranges)
	}
	_, ranges = splitSources([]string{"203.0.113.128/25", "10.0.0.0/8", "172.16.0.0/12", "10.1.0.0/16", "203.0.114.0/24"})
	want := [][2]uint32{
		{10 << 24, 11<<24 - 1},                           // 10.0.0.0/8 swallows 10.1.0.0/16
		{172<<24 | 16<<16, 172<<24 | 32<<16 - 1},         // 172.16.0.0/12
		{203<<24 | 113<<8 | 128, 203<<24 | 114<<8 | 255}, // adjacent /25 and /24 merge
	}
	if !slices.Equal(ranges, want) {
		t.Fatalf("ranges: %v, want %v", ranges, want)
	}
}

func FuzzParseIndicators(f *testing.F) {
	for _, s := range []string{
		"kid:k-stolen\nip:203.0.113.0/24", "asn:AS4134\ncountry:cn", "subject:1-99999999",
		"from:2025-06-24T00:00:00Z\nto:2025-11-09T00:00:00Z", "reason:not_issued", "ip:::ffff:1.2.3.4/120",
		"subject:18446744073709551615", "ip:0.0.0.0/0", `{"key_ids":["k"]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ind, err := ParseIndicators(strings.Split(in, "\n"))
		if err == nil {
			if verr := ind.Validate(); verr != nil {
				t.Fatalf("parsed indicators do not validate: %v", verr)
			}
			if _, r := splitSources(ind.Sources); len(r) > len(ind.Sources) {
				t.Fatal("more source ranges than sources")
			}
		} else if !errors.Is(err, ErrBadIndicator) && !errors.Is(err, ErrNoIndicators) {
			t.Fatalf("untyped error %v", err)
		}
		if _, err := ParseIndicatorsJSON([]byte(in)); err != nil && !errors.Is(err, ErrBadIndicator) && !errors.Is(err, ErrNoIndicators) {
			t.Fatalf("untyped JSON error %v", err)
		}
	})
}
