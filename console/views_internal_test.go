package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
)

// fakes of the parts a namer reads.
type fakeStaff struct{ people []staff.Person }

func (f fakeStaff) People(context.Context) ([]staff.Person, error) { return f.people, nil }
func (f fakeStaff) Custodians(_ context.Context, _ staff.ResourceKind, kid string) ([]staff.Custodian, error) {
	if kid != "k-live" {
		return nil, nil
	}
	return []staff.Custodian{{StaffID: "s-alice", UserName: "alice", Status: staff.Active}, {StaffID: "s-bob", UserName: "bob", Status: staff.Departed}}, nil
}
func (f fakeStaff) CheckActor(context.Context, string) error { return nil }

type fakeKeys struct{}

func (fakeKeys) List(context.Context) ([]keys.Key, error) {
	return []keys.Key{{KID: "k-live", State: keys.Active}, {KID: "k-old", State: keys.Revoked}}, nil
}
func (fakeKeys) Rotate(context.Context, string, string) (keys.Key, error) { return keys.Key{}, nil }
func (fakeKeys) Revoke(context.Context, string, string, string) error     { return nil }

type fakeCreds struct{}

func (fakeCreds) Admin(string) (*authority.Admin, error) { return nil, fmt.Errorf("no") }
func (fakeCreds) Clients() []authority.Client {
	now := time.Now()
	return []authority.Client{{ID: "c-shop", Name: "shop-web", HeldBy: "s-alice"}, {ID: "c-gone", Name: "old-batch", RevokedAt: &now}}
}

func testNamer() *namer {
	c := &Console{log: slog.Default(), cfg: Config{
		Staff: fakeStaff{people: []staff.Person{
			{ID: "s-alice", UserName: "alice", DisplayName: "Alice Kim", Kind: staff.Employee, Status: staff.Active},
			{ID: "s-bob", UserName: "bob", Kind: staff.Contractor, Status: staff.Departed},
		}},
		Keys: fakeKeys{}, Credentials: fakeCreds{},
		IsDecoy: func(s string) bool { return s == "999" },
		Locate: func(a netip.Addr) gateway.Location {
			if netip.MustParsePrefix("198.51.100.0/24").Contains(a) {
				return gateway.Location{Country: "KR", ASN: 4766, Org: "Korea Telecom"}
			}
			return gateway.Location{}
		},
	}}
	return c.namer(context.Background())
}

func TestEntityNames(t *testing.T) {
	n := testNamer()
	for _, tc := range []struct {
		raw                      string
		kind, name, detail, flag string
	}{
		{"ip:198.51.100.7", kindNetwork, "198.51.100.7", "KR · AS4766 Korea Telecom", ""},
		{"net:198.51.100.0/24", kindNetwork, "198.51.100.0/24", "KR · AS4766 Korea Telecom", ""},
		{"ip:203.0.113.1", kindNetwork, "203.0.113.1", "location unknown", ""},
		{"ip:not-an-address", kindOther, "ip:not-an-address", "", ""},
		{"asn:4766", kindNetwork, "AS4766", "", ""},
		{"kid:k-live", kindKey, "k-live", "custodians: Alice Kim, bob (departed)", ""},
		{"kid:k-old", kindKey, "k-old", "custodians: none", "revoked"},
		{"kid:k-unknown", kindKey, "k-unknown", "not a key of this authority", ""},
		{"subject:999", kindMember, "member 999", "no real customer has this id", "decoy"},
		{"subject:1001@CN", kindMember, "member 1001", "from CN", ""},
		{"subject:s-bob", kindPerson, "bob", "contractor", "departed"},
		{"credential:s-alice", kindPerson, "Alice Kim", "alice · employee", ""},
		{"credential:c-shop", kindClient, "shop-web", "client c-shop · secret held by alice", ""},
		{"credential:k-live", kindKey, "k-live", "custodians: Alice Kim, bob (departed)", ""},
		{"credential:0123456789abcdef0123", "credential", "0123456789ab…", "", ""},
		{"client:c-gone", kindClient, "old-batch", "client c-gone", "revoked"},
		{"s-bob", kindPerson, "bob", "contractor", "departed"},
		{"k-old", kindKey, "k-old", "custodians: none", "revoked"},
		{"country:CN@GET /api/members/{id}", kindCountry, "CN", "on GET /api/members/{id}", ""},
		{"route:GET /api/x", kindRoute, "GET /api/x", "", ""},
		{"route:", kindRoute, "route:", "", ""},
		{"ua:curl/8.0 a@b", kindAgent, "curl/8.0 a@b", "", ""},
		{"session:abcdefghijklmnopqrstuvwxyz", kindSession, "abcdefghijkl…", "token or login session id", ""},
		{"weird", kindOther, "weird", "", ""},
	} {
		e := n.name(tc.raw)
		if e.Kind != tc.kind || e.Name != tc.name || e.Detail != tc.detail || e.Flag != tc.flag || e.Raw != tc.raw {
			t.Errorf("%q: %+v, want kind %q name %q detail %q flag %q", tc.raw, e, tc.kind, tc.name, tc.detail, tc.flag)
		}
	}
}

func FuzzEntityName(f *testing.F) {
	for _, s := range []string{"ip:198.51.100.7", "net:198.51.100.0/24", "subject:999@KR", "kid:k-live", "credential:s-bob", "s-alice",
		"country:CN@x", "ua:\xff\xfe", "session:" + strings.Repeat("é", 40), ":", "", "ip:::ffff:1.2.3.4", "net:::/0"} {
		f.Add(s)
	}
	n := testNamer()
	f.Fuzz(func(t *testing.T, raw string) {
		e := n.name(raw)
		if e.Raw != raw || e.Kind == "" || (raw != "" && e.Name == "") {
			t.Fatalf("%q: %+v", raw, e)
		}
		if utf8.ValidString(raw) && !utf8.ValidString(e.Name) {
			t.Fatalf("%q: name %q is not UTF-8", raw, e.Name)
		}
	})
}

func alertsOf(specs ...string) []detect.Alert {
	var as []detect.Alert
	t0 := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	for i, s := range specs {
		f := strings.Split(s, "/") // incident/rule/entity/count
		var cnt int64
		fmt.Sscan(f[3], &cnt)
		at := t0.Add(time.Duration(i) * time.Minute)
		as = append(as, detect.Alert{ID: fmt.Sprintf("al-%d", i), Incident: f[0], Rule: f[1], Entity: f[2], Count: cnt,
			Severity: detect.Low, FirstSeen: at, LastSeen: at.Add(30 * time.Second), Raised: at})
	}
	return as
}

func TestGroupAlerts(t *testing.T) {
	as := alertsOf("i1/enum/ip:1/5", "i1/enum/ip:2/1", "i1/enum/ip:1/2", "i1/walk/ip:3/1", "i2/enum/ip:9/4")
	as[3].Severity = detect.Critical
	n := testNamer()
	gs := groupAlerts(as, groupIncident, alertFilter{}, n)
	type row struct {
		inc, rule        string
		alerts, distinct int
		events           int64
		top              string
	}
	var got []row
	for _, g := range gs {
		got = append(got, row{g.Incident, g.Rule, g.Alerts, g.Distinct, g.Events, g.Entities[0].Raw})
	}
	// The latest activity first.
	want := []row{{"i2", "enum", 1, 1, 4, "ip:9"}, {"i1", "walk", 1, 1, 1, "ip:3"}, {"i1", "enum", 3, 2, 8, "ip:1"}}
	if !slices.Equal(got, want) {
		t.Fatalf("groups %+v, want %+v", got, want)
	}
	if gs[1].Severity != detect.Critical || gs[1].Only != "al-3" || gs[2].Only != "" {
		t.Errorf("severity %s, only %q %q", gs[1].Severity, gs[1].Only, gs[2].Only)
	}
	if !gs[2].FirstSeen.Equal(as[0].FirstSeen) || !gs[2].LastSeen.Equal(as[2].LastSeen) {
		t.Errorf("first/last seen %v %v", gs[2].FirstSeen, gs[2].LastSeen)
	}
	if gs[2].Link != "/console/alerts?incident=i1&rule=enum&group=none" {
		t.Errorf("drill-down %s", gs[2].Link)
	}
	byRule := groupAlerts(as, groupRule, alertFilter{}, n)
	if len(byRule) != 2 || byRule[0].Rule != "enum" || byRule[0].Alerts != 4 || byRule[0].Incident != "" {
		t.Fatalf("by rule %+v", byRule)
	}
}

func TestPaginate(t *testing.T) {
	link := func(p int) string { return fmt.Sprint(p) }
	for _, tc := range []struct {
		n, p                int
		page, pages, lo, hi int
		prev, next          string
	}{
		{0, 1, 1, 1, 0, 0, "", ""},
		{50, 1, 1, 1, 0, 50, "", ""},
		{51, 1, 1, 2, 0, 50, "", "2"},
		{51, 2, 2, 2, 50, 51, "1", ""},
		{120, 99, 3, 3, 100, 120, "2", ""},
		{120, -4, 1, 3, 0, 50, "", "2"},
	} {
		pg, lo, hi := paginate(tc.n, tc.p, 50, link)
		if pg.Page != tc.page || pg.Pages != tc.pages || lo != tc.lo || hi != tc.hi || pg.Prev != tc.prev || pg.Next != tc.next ||
			pg.Of != tc.n || (tc.n > 0 && (pg.From != lo+1 || pg.To != hi)) {
			t.Errorf("paginate(%d, %d) = %+v [%d:%d]", tc.n, tc.p, pg, lo, hi)
		}
	}
}

// FuzzAlertFilter: whatever query the alert page is given, its own links
// read back to the same filter.
func FuzzAlertFilter(f *testing.F) {
	for _, s := range []string{"", "group=rule&page=3", "severity=high&rule=enum&q=a%26b&incident=inc-1&group=none&page=2",
		"page=-1", "page=99999999999999999999", "q=%ZZ", "group=%00", "rule=a&rule=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := &http.Request{URL: &url.URL{Path: "/console/alerts", RawQuery: raw}}
		fl := filterOf(r)
		if fl.Page < 1 || !slices.Contains([]string{groupIncident, groupRule, groupNone}, fl.Group) {
			t.Fatalf("%q: %+v", raw, fl)
		}
		link := fl.Link(fl.Group, fl.Page)
		u, err := url.Parse(link)
		if err != nil || u.Path != "/console/alerts" || u.Host != "" {
			t.Fatalf("%q: link %q: %v", raw, link, err)
		}
		if again := filterOf(&http.Request{URL: u}); again != fl {
			t.Fatalf("%q: %+v reads back as %+v from %s", raw, fl, again, link)
		}
	})
}
