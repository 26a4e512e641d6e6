package detect

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

func TestTestRules(t *testing.T) {
	rf, _ := os.Open("testdata/rules.yaml")
	defer rf.Close()
	evf, _ := os.Open("testdata/events.jsonl")
	defer evf.Close()
	rep, err := TestRules(rf, evf)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 5 || len(rep.Malformed) != 1 || rep.Malformed[0].Line != 3 {
		t.Fatalf("events %d malformed %+v", rep.Events, rep.Malformed)
	}
	want := map[string][2]int64{"address_book_abroad": {3, 1}, "entrance_codes": {1, 1}, "old_tokens": {1, 1}}
	for _, r := range rep.Rules {
		w := want[r.Name]
		if r.Matches != w[0] || int64(r.Alerts) != w[1] {
			t.Errorf("%s: matches %d alerts %d, want %v", r.Name, r.Matches, r.Alerts, w)
		}
	}
	for _, a := range rep.Alerts {
		if a.Rule == "address_book_abroad" && (a.Entity != "src_ip:203.0.113.9" || a.Samples[0] != "a3") {
			t.Errorf("threshold alert %+v", a)
		}
	}
}

func TestRuleErrors(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"fail/undeclared", "rules:\n  - name: x\n    expr: route == foo\n", "rules.yaml:3:20: rule x: undeclared reference to 'foo'"},
		{"fail/quoted_syntax", "rules:\n  - name: x\n    expr: 'route == '\n", "rules.yaml:3:"},
		{"fail/not_bool", "rules:\n  - name: x\n    expr: status + 1\n", "rules.yaml:3:11: rule x: expr must be a bool"},
		{"fail/block_scalar", "rules:\n  - name: x\n    expr: |\n      route == \"a\" &&\n        nope\n", "rules.yaml:5:9: rule x: undeclared reference to 'nope'"},
		{"fail/bad_name", "rules:\n  - name: X Y\n    expr: 'true'\n", "rules.yaml:2:11"},
		{"fail/duplicate", "rules:\n  - name: x\n    expr: 'true'\n  - name: x\n    expr: 'true'\n", "rules.yaml:4:11: duplicate rule name"},
		{"fail/unknown_field", "rules:\n  - name: x\n    expr: 'true'\n    treshold: 3\n", "rules.yaml:4:5: unknown field \"treshold\""},
		{"fail/threshold_without_window", "rules:\n  - name: x\n    expr: 'true'\n    threshold: 3\n", "rules.yaml:4:16: rule x: a threshold needs a positive window"},
		{"fail/group_by", "rules:\n  - name: x\n    expr: 'true'\n    group_by: data_classes\n", "rules.yaml:4:15"},
		{"fail/severity", "rules:\n  - name: x\n    expr: 'true'\n    severity: loud\n", "rules.yaml:4:15"},
		{"fail/contain", "rules:\n  - name: x\n    expr: 'true'\n    contain: {action: block_source}\n", "rules.yaml:4:14"},
		{"fail/yaml", "rules: [\n", "rules.yaml"},
		{"ok/empty", "", ""},
		{"ok/list_form", "- name: x\n  expr: 'true'\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckRules("rules.yaml", strings.NewReader(tc.src))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidRules) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - name: cn\n    expr: country == \"CN\"\n    threshold: 1000000\n    window: 1h\n")
	e := newEngine(t, func(c *Config) { c.ForeignOrigin.Disabled = true })
	if err := e.LoadRules(path); err != nil {
		t.Fatal(err)
	}
	// Feed events while reloading; every event is evaluated by one rule set
	// or the other, and the kept rule keeps its count.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20000; i++ {
			a := ev(i)
			a.Country = "CN"
			e.Process(a)
		}
	}()
	for i := 0; i < 20; i++ {
		write("rules:\n  - name: cn\n    expr: country == \"CN\"\n    threshold: 1000000\n    window: 1h\n  - name: other\n    expr: country == \"JP\"\n")
		if err := e.LoadRules(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if got := e.rules.Load().byName("cn").matchCount(); got != 20000 {
		t.Fatalf("cn matched %d of 20000 across reloads", got)
	}
	// A broken file leaves the running rules in place.
	write("rules:\n  - name: cn\n    expr: country ==\n")
	if err := e.LoadRules(path); err == nil {
		t.Fatal("broken rules loaded")
	}
	if len(e.Rules()) != 2 {
		t.Fatalf("rules after failed reload: %v", e.Rules())
	}
}

func TestRuleFields(t *testing.T) {
	exprs := map[string]string{
		"method": `method == "GET"`, "path": `path.startsWith("/v1/members/")`, "status": `status == 200`,
		"asn": `asn == 4766`, "ua": `user_agent.contains("shop")`, "kid": `token.kid == "k1"`, "jti": `token.jti == "j1"`,
		"sub": `token.sub == subject`, "verdict": `verdict == "allow"`, "reason": `reason == ""`,
		"classes": `"address" in data_classes`, "time": `time > timestamp("2025-01-01T00:00:00Z")`,
		"bytes": `bytes >= 0 && latency_us >= 0`, "ip": `src_ip == "198.51.100.7"`, "gw": `gateway == ""`,
		"rid": `request_id == "r0"`, "exp": `token.exp == 0 && token.aud == ""`, "route": `route.endsWith("addresses")`,
	}
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for n, x := range exprs {
		sb.WriteString("  - name: f_" + n + "\n    expr: '" + x + "'\n")
	}
	e := newEngine(t, nil)
	if err := e.LoadRulesFrom("f", strings.NewReader(sb.String())); err != nil {
		t.Fatal(err)
	}
	e.Process(ev(0))
	got := rulesOf(e)
	for n := range exprs {
		if got["f_"+n] != 1 {
			t.Errorf("rule f_%s did not match", n)
		}
	}
	// And none matches an event that differs.
	e2 := newEngine(t, nil)
	_ = e2.LoadRulesFrom("f", strings.NewReader("rules:\n  - name: n\n    expr: 'token.kid == \"k2\"'\n"))
	e2.Process(ev(0))
	if len(e2.Alerts()) != 0 {
		t.Fatal("unexpected match")
	}
	_ = event.Allow
}
