package sigma

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

func convertDir(t *testing.T, dir string) map[string]detect.Rule {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.yml"))
	out := map[string]detect.Rule{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Convert(b)
		if dir == "ok" && err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if dir == "fail" {
			if err == nil {
				t.Errorf("fail/%s: converted to %+v", filepath.Base(f), r)
			}
			continue
		}
		out[strings.TrimSuffix(filepath.Base(f), ".yml")] = r
	}
	return out
}

func TestConvert(t *testing.T) {
	rules := convertDir(t, "ok")
	want := map[string]detect.Rule{
		"web_path_traversal":    {Name: "sigma_path_traversal_in_request_uri", Severity: detect.High},
		"proxy_scanner_agents":  {Name: "sigma_scanner_user_agents_reaching_member_data", Severity: detect.Medium},
		"web_address_book":      {Name: "sigma_address_book_read_with_every_marker", Severity: detect.Low},
		"web_enumeration_count": {Name: "sigma_member_profile_enumeration_from_one_address", Severity: detect.Critical, Threshold: 4, Window: time.Minute, GroupBy: "src_ip"},
	}
	for k, w := range want {
		r := rules[k]
		if r.Name != w.Name || r.Severity != w.Severity || r.Threshold != w.Threshold || r.Window != w.Window || r.GroupBy != w.GroupBy {
			t.Errorf("ok/%s: %+v", k, r)
		}
	}
}

// Each refusal names what custos cannot express.
func TestRefusals(t *testing.T) {
	for file, why := range map[string]string{
		"query_string":     "query string",
		"keywords":         "keyword searches",
		"base64":           "|base64offset is not supported",
		"process_creation": `category "process_creation" is not a web log`,
		"count_distinct":   "distinct values",
		"count_less":       "> or >=",
		"status_contains":  "is a number",
		"referrer":         "Referer",
		"unknown_search":   `"other", which is not a search`,
	} {
		t.Run("fail/"+file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "fail", file+".yml"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Convert(b)
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), why) {
				t.Fatalf("%v", err)
			}
		})
	}
	convertDir(t, "fail") // and nothing in fail/ converts
}

func ev(path, ua, ip string, status int) event.Access {
	return event.Access{Time: time.Date(2025, 6, 24, 3, 0, 0, 0, time.UTC), Method: "GET", Path: path, UserAgent: ua, SrcIP: ip, Status: status, Verdict: event.Allow}
}

// The converted rules load into the engine and fire on the events they
// describe, and only on those.
func TestConvertedRulesFire(t *testing.T) {
	rules := convertDir(t, "ok")
	var list []detect.Rule
	for _, r := range rules {
		list = append(list, r)
	}
	file, err := File(list)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := detect.CheckRules("sigma.yml", bytes.NewReader(file)); err != nil {
		t.Fatalf("%v\n%s", err, file)
	}
	evs := []struct {
		e     event.Access
		fires []string
	}{
		{ev("/static/../../etc/passwd", "curl/8", "198.51.100.1", 404), []string{"path_traversal"}},
		{ev("/static/..%2F..%2Fetc", "curl/8", "198.51.100.1", 404), []string{"path_traversal"}}, // case-insensitive like Sigma
		{ev("/static/ok.css", "curl/8", "198.51.100.1", 200), nil},
		{ev("/api/members/7/profile", "SQLMAP/1.7", "198.51.100.2", 200), []string{"scanner_user_agents"}},
		{ev("/api/members/7/profile", "sqlmap/1.7", "198.51.100.2", 404), nil}, // the filter
		{ev("/api/orders", "sqlmap/1.7", "198.51.100.2", 200), nil},            // all of selection_*
		{ev("/api/members/42/addresses", "app", "198.51.100.3", 200), []string{"address_book"}},
		{ev("/api/members/x42/addresses", "app", "198.51.100.3", 200), nil}, // |re
		{ev("/export", "Export-Tool/2.0", "198.51.100.3", 200), []string{"address_book"}},
		{ev("/export", "crawler (bulk)", "198.51.100.3", 200), []string{"address_book"}},
	}
	var lines bytes.Buffer
	for _, x := range evs {
		b, _ := json.Marshal(x.e)
		lines.Write(append(b, '\n'))
	}
	for i := 1; i <= 4; i++ { // enumeration: four profiles from one address (count > 3)
		e := ev("/api/members/"+string(rune('0'+i))+"/profile", "app", "203.0.113.50", 200)
		e.Time = e.Time.Add(time.Duration(i) * time.Second)
		b, _ := json.Marshal(e)
		lines.Write(append(b, '\n'))
	}
	for i := 1; i <= 3; i++ { // three from another: below the threshold
		e := ev("/api/members/"+string(rune('0'+i))+"/profile", "app", "203.0.113.51", 200)
		b, _ := json.Marshal(e)
		lines.Write(append(b, '\n'))
	}
	rep, err := detect.TestRules(bytes.NewReader(file), &lines)
	if err != nil {
		t.Fatal(err)
	}
	matches := map[string]int64{}
	alerts := map[string]int{}
	for _, r := range rep.Rules {
		for _, short := range []string{"path_traversal", "scanner_user_agents", "address_book", "enumeration"} {
			if strings.Contains(r.Name, short) {
				matches[short], alerts[short] = r.Matches, r.Alerts
			}
		}
	}
	wantMatches := map[string]int64{"path_traversal": 2, "scanner_user_agents": 1, "address_book": 3, "enumeration": 9}
	for k, n := range wantMatches {
		if matches[k] != n {
			t.Errorf("%s: %d matches, want %d (%+v)", k, matches[k], n, rep.Rules)
		}
	}
	if alerts["enumeration"] != 1 {
		t.Errorf("enumeration: %d alerts, want 1 (for 203.0.113.50 only)", alerts["enumeration"])
	}
	for _, a := range rep.Alerts {
		if strings.Contains(a.Rule, "enumeration") && a.Entity != "src_ip:203.0.113.50" {
			t.Errorf("enumeration alert on %s", a.Entity)
		}
	}
}

func FuzzConvert(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Convert(b)
		if err != nil {
			return
		}
		file, err := File([]detect.Rule{r})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := detect.CheckRules("fuzz.yml", bytes.NewReader(file)); err != nil {
			t.Fatalf("converted rule does not load: %v\n%s", err, file)
		}
	})
}
