package console_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/internal/geodb"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/staff"
)

// writeGeo writes a MaxMind-format database placing 198.51.100.0/24 in
// Korea Telecom's network and 203.0.113.0/24 in a foreign one.
func writeGeo(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "geo.mmdb")
	if err := geodb.Write(p, "custos-console-test", []geodb.Network{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Country: "KR", ASN: 4766, Org: "Korea Telecom"},
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Country: "CN", ASN: 64500, Org: "Example Hosting"},
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

// crowd is what seedAlerts raised: the incident of many near-identical
// alerts and the names the console should show.
type crowd struct {
	walkIncident string // the incident of the many enumeration alerts
	walkAlerts   int
	person       string // display name of a custodian of the active key
	departed     string // user name of someone who left
	client       string // a client's name
	decoy        string // a decoy member id
	kid          string
}

// Sizes of the seeded alert population.
const (
	walkAlerts  = 120 // one incident of near-identical alerts
	probeRules  = 60  // distinct rules, one incident each
	probeAlerts = 2   // alerts per probe rule
)

// startGeo runs custos with the test GeoIP database behind its gateway.
func startGeo(t *testing.T) *env {
	t.Helper()
	geo := writeGeo(t)
	return startWith(t, func(c *config.Config) { c.Gateway.GeoIP = []string{geo} })
}

// seedAlerts gives the console an incident of 120 near-identical alerts,
// 60 more incidents, and alerts on a person, a client, a decoy member, a
// key and networks.
func seedAlerts(t *testing.T, e *env) crowd {
	t.Helper()
	ctx := context.Background()
	k, _, err := e.s.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cr := crowd{person: "Alice Kim", departed: "dev.left", client: "checkout-app", decoy: e.cfg.Decoys[0], kid: k.KID, walkAlerts: walkAlerts}
	alice, err := e.s.Staff.AddPerson(ctx, staff.Person{UserName: "alice.kim", DisplayName: cr.person}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Staff.AddCustodian(ctx, staff.SigningKey, k.KID, alice.ID, staff.Operate, "test"); err != nil {
		t.Fatal(err)
	}
	gone, err := e.s.Staff.AddPerson(ctx, staff.Person{UserName: cr.departed}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Staff.Depart(ctx, gone.ID, "test", "left the company"); err != nil {
		t.Fatal(err)
	}
	var cl struct {
		ID string `json:"client_id"`
	}
	if err := e.api.Do(ctx, "POST", "/v1/clients", map[string]any{"name": cr.client, "audience": []string{config.DefaultAudience}}, &cl); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raise := func(rule, entity string, sev detect.Severity, ago time.Duration) {
		e.s.Detect.Raise(detect.Finding{Rule: rule, Severity: sev, Entity: entity, Time: now.Add(-ago), Summary: rule + " on " + entity})
	}
	for i := range walkAlerts {
		raise(detect.RuleEnumeration, fmt.Sprintf("ip:198.51.100.%d", i+1), detect.High, time.Duration(walkAlerts-i)*15*time.Second)
	}
	for r := range probeRules {
		for j := range probeAlerts {
			raise(fmt.Sprintf("probe_%02d", r), fmt.Sprintf("ip:203.0.113.%d", 2*r+j), detect.Low, time.Duration(r+j)*time.Minute)
		}
	}
	raise(detect.RuleDecoySubject, "subject:"+cr.decoy, detect.Critical, 0)
	raise(detect.RuleDepartedCred, "credential:"+gone.ID, detect.Critical, 0)
	raise(detect.RuleNotIssued, "kid:"+k.KID, detect.Critical, 0)
	raise("client_misuse", "client:"+cl.ID, detect.Medium, 0)
	raise(detect.RuleSequentialWalk, "net:198.51.100.0/24", detect.High, 0)
	for _, a := range e.s.Detect.Alerts() {
		if a.Rule == detect.RuleEnumeration {
			cr.walkIncident = a.Incident
		}
	}
	if cr.walkIncident == "" {
		t.Fatal("no enumeration incident")
	}
	return cr
}

var (
	groupRow = regexp.MustCompile(`data-group data-incident="([^"]*)" data-rule="([^"]*)" data-alerts="(\d+)"`)
	alertRow = regexp.MustCompile(`data-alert="al-[0-9a-f]+"`)
	pageInfo = regexp.MustCompile(`id="page-info">page (\d+) of (\d+) · rows (\d+)–(\d+) of (\d+)<`)
)

// storeGroups counts the stored alerts by incident and rule.
func storeGroups(e *env) map[[2]string]int {
	m := map[[2]string]int{}
	for _, a := range e.s.Detect.Alerts() {
		m[[2]string{a.Incident, a.Rule}]++
	}
	return m
}

func TestConsoleAlertViews(t *testing.T) {
	e := startGeo(t)
	cr := seedAlerts(t, e)
	c := newClient(t)
	e.login(t, c)
	get := func(t *testing.T, path string) string {
		t.Helper()
		resp, err := c.Get(e.apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	page := func(t *testing.T, b string) [5]int {
		t.Helper()
		m := pageInfo.FindStringSubmatch(b)
		if m == nil {
			t.Fatal("no page info")
		}
		var out [5]int
		for i := range out {
			out[i], _ = strconv.Atoi(m[i+1])
		}
		return out
	}
	want := storeGroups(e)

	t.Run("ok/groups_match_the_store_and_page", func(t *testing.T) {
		seen := map[[2]string]int{}
		pages := 0
		for p := 1; ; p++ {
			b := get(t, fmt.Sprintf("/console/alerts?page=%d", p))
			pi := page(t, b)
			pages = pi[1]
			rows := groupRow.FindAllStringSubmatch(b, -1)
			if pi[0] != p || pi[4] != len(want) || len(rows) != pi[3]-pi[2]+1 || len(rows) > console.AlertPageSize {
				t.Fatalf("page %d: info %v, %d rows, %d groups in the store", p, pi, len(rows), len(want))
			}
			for _, r := range rows {
				n, _ := strconv.Atoi(r[3])
				k := [2]string{r[1], r[2]}
				if _, dup := seen[k]; dup {
					t.Fatalf("group %v on two pages", k)
				}
				seen[k] = n
				if n != want[k] {
					t.Errorf("group %v shows %d alerts, the store has %d", k, n, want[k])
				}
			}
			if !strings.Contains(b, `id="page-next"`) {
				break
			}
		}
		if len(seen) != len(want) || pages < 2 {
			t.Fatalf("%d groups over %d pages, the store has %d", len(seen), pages, len(want))
		}
		if got := seen[[2]string{cr.walkIncident, detect.RuleEnumeration}]; got != cr.walkAlerts {
			t.Fatalf("the enumeration incident shows %d alerts, want %d", got, cr.walkAlerts)
		}
	})

	t.Run("ok/page_out_of_range_is_clamped", func(t *testing.T) {
		for _, p := range []string{"999", "-3", "0", "x", "2abc", "%31"} {
			b := get(t, "/console/alerts?page="+p)
			pi := page(t, b)
			if pi[0] < 1 || pi[0] > pi[1] {
				t.Errorf("page=%s shows page %d of %d", p, pi[0], pi[1])
			}
		}
	})

	t.Run("ok/group_by_rule", func(t *testing.T) {
		b := get(t, "/console/alerts?group=rule&rule="+detect.RuleEnumeration)
		rows := groupRow.FindAllStringSubmatch(b, -1)
		if len(rows) != 1 || rows[0][1] != "" || rows[0][3] != strconv.Itoa(cr.walkAlerts) {
			t.Fatalf("by rule: %v", rows)
		}
	})

	t.Run("ok/drill_down_lists_the_group_paged", func(t *testing.T) {
		q := "/console/alerts?group=none&incident=" + cr.walkIncident + "&rule=" + detect.RuleEnumeration
		total := 0
		for p := 1; p <= 3; p++ {
			b := get(t, q+"&page="+strconv.Itoa(p))
			pi := page(t, b)
			n := len(alertRow.FindAllString(b, -1))
			if pi[4] != cr.walkAlerts || n != pi[3]-pi[2]+1 {
				t.Fatalf("page %d: info %v, %d rows", p, pi, n)
			}
			total += n
		}
		if total != cr.walkAlerts {
			t.Fatalf("%d alerts over three pages, want %d", total, cr.walkAlerts)
		}
		// The group row links to exactly this list.
		b := get(t, "/console/alerts?rule="+detect.RuleEnumeration)
		if !strings.Contains(b, `href="/console/alerts?incident=`+cr.walkIncident+`&amp;rule=`+detect.RuleEnumeration+`&amp;group=none"`) {
			t.Error("group row does not link to its alerts")
		}
	})

	t.Run("ok/entities_named", func(t *testing.T) {
		b := get(t, "/console/alerts?group=none&severity=critical") + get(t, "/console/alerts?group=none&rule=client_misuse") +
			get(t, "/console/alerts?group=none&rule="+detect.RuleSequentialWalk) + get(t, "/console/alerts?group=none&q=198.51.100.7")
		for _, s := range []string{
			cr.person,                         // custodian of the key
			`<b class="ename">` + cr.departed, // person behind a credential
			`>departed</span>`,                // and the marker
			`<b class="ename">` + cr.client,   // client
			`<b class="ename">member ` + cr.decoy + `</b> <span class="badge bad">decoy</span>`,
			`<b class="ename">198.51.100.0/24</b>`, // network with its place
			"KR · AS4766 Korea Telecom",
			`title="kid:` + cr.kid + `"`, // raw value kept for analysts
			`title="subject:` + cr.decoy + `"`,
		} {
			if !strings.Contains(b, s) {
				t.Errorf("alert pages lack %q", s)
			}
		}
	})

	t.Run("ok/search_by_name", func(t *testing.T) {
		for _, q := range []string{"alice", "Korea+Telecom", "checkout-app", "dev.left"} {
			b := get(t, "/console/alerts?group=none&q="+q)
			if pi := page(t, b); pi[4] == 0 {
				t.Errorf("q=%s matches nothing", q)
			}
		}
		if pi := page(t, get(t, "/console/alerts?group=none&q=no-such-name-anywhere")); pi[4] != 0 {
			t.Errorf("nonsense search matches %d", pi[4])
		}
	})

	t.Run("ok/incident_page_groups_and_names", func(t *testing.T) {
		b := get(t, "/console/incidents/"+cr.walkIncident)
		rows := groupRow.FindAllStringSubmatch(b, -1)
		if len(rows) != 1 || rows[0][3] != strconv.Itoa(cr.walkAlerts) {
			t.Fatalf("incident groups %v", rows)
		}
		if n := len(alertRow.FindAllString(b, -1)); n != 0 {
			t.Fatalf("incident page lists %d alerts one by one", n)
		}
		if !strings.Contains(b, "KR · AS4766 Korea Telecom") || !strings.Contains(b, `id="chart-entities"`) {
			t.Error("incident page lacks named entities or the entity chart")
		}
		if !strings.Contains(get(t, "/console/incidents"), "Korea Telecom") {
			t.Error("incident list lacks named entities")
		}
	})
}

// startWith is start with the configuration edited.
func startWith(t *testing.T, edit func(*config.Config)) *env {
	t.Helper()
	return startPop(t, shop.Population{Members: 500, Missing: 100, Decoys: 5, Seed: 7}, edit)
}
