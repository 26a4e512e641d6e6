package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
)

// collector records the JSON objects posted to it, refusing a request
// without want as its Authorization header.
type collector struct {
	mu   sync.Mutex
	auth string
	objs []map[string]any
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.auth != "" && r.Header.Get("Authorization") != c.auth {
		w.WriteHeader(403)
		return
	}
	dec := json.NewDecoder(r.Body)
	for {
		var o map[string]any
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			w.WriteHeader(400)
			return
		}
		c.mu.Lock()
		c.objs = append(c.objs, o)
		c.mu.Unlock()
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"text":"Success","code":0,"status":"success"}`))
}

func (c *collector) find(pred func(map[string]any) bool) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.objs {
		if pred(o) {
			return o
		}
	}
	return nil
}

// Configured sinks carry a forged token's story out: the refusal as an OCSF
// HTTP Activity and the alert as an OCSF Detection Finding to Splunk, and
// a page keyed by the incident to PagerDuty.
func TestConfiguredSinks(t *testing.T) {
	hec := &collector{auth: "Splunk hec-token-1"}
	pd := &collector{}
	hsrv, psrv := httptest.NewServer(hec), httptest.NewServer(pd)
	defer hsrv.Close()
	defer psrv.Close()
	t.Setenv("TEST_HEC_TOKEN", "hec-token-1")
	t.Setenv("TEST_PD_KEY", "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12")
	e := startWith(t, func(c *config.Config) {
		c.Detect.Splunk = config.Splunk{URL: hsrv.URL, TokenEnv: "TEST_HEC_TOKEN", Format: "ocsf", Events: true}
		c.Detect.PagerDuty = config.PagerDuty{URL: psrv.URL, RoutingKeyEnv: "TEST_PD_KEY"}
	})
	m := e.Member(3)
	forged := e.Forge(t, m, "forged-sinks")
	if st, reason := e.Get(t, forged, "/api/members/"+m+"/profile"); st != 401 || reason != "not_issued" {
		t.Fatalf("%d %s", st, reason)
	}
	deadline := time.Now().Add(10 * time.Second)
	var access, finding, page map[string]any
	for time.Now().Before(deadline) && (access == nil || finding == nil || page == nil) {
		access = hec.find(func(o map[string]any) bool {
			ev, _ := o["event"].(map[string]any)
			return o["sourcetype"] == "ocsf:http_activity" && ev["status_detail"] == "not_issued"
		})
		finding = hec.find(func(o map[string]any) bool {
			ev, _ := o["event"].(map[string]any)
			fi, _ := ev["finding_info"].(map[string]any)
			return o["sourcetype"] == "ocsf:detection_finding" && fi["title"] == "not_issued"
		})
		page = pd.find(func(o map[string]any) bool { return o["event_action"] == "trigger" })
		time.Sleep(20 * time.Millisecond)
	}
	if access == nil || finding == nil || page == nil {
		t.Fatalf("access %v finding %v page %v", access != nil, finding != nil, page != nil)
	}
	if dk, _ := page["dedup_key"].(string); !strings.HasPrefix(dk, "custos:") {
		t.Fatalf("dedup_key %q", dk)
	}
}

func TestSinkConfigRefused(t *testing.T) {
	for name, edit := range map[string]func(*config.Config){
		"fail/splunk_without_token":   func(c *config.Config) { c.Detect.Splunk.URL = "https://splunk:8088" },
		"fail/format":                 func(c *config.Config) { c.Detect.SyslogFormat = "cef" },
		"fail/syslog_network":         func(c *config.Config) { c.Detect.SyslogNetwork = "TLS " },
		"fail/pagerduty_min_severity": func(c *config.Config) { c.Detect.PagerDuty.MinSeverity = "urgent" },
	} {
		t.Run(name, func(t *testing.T) {
			c := config.Default()
			c.Data = t.TempDir()
			edit(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// Lists page with limit and cursor and say when an answer is cut.
func TestListsPage(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		body := map[string]any{"name": fmt.Sprintf("paging-%d", i), "audience": []string{config.DefaultAudience}}
		if err := e.API.Do(ctx, "POST", "/v1/clients", body, nil); err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	for cursor := ""; ; {
		var pg struct {
			Clients []struct {
				ClientID string `json:"client_id"`
			} `json:"clients"`
			Truncated bool   `json:"truncated"`
			Next      string `json:"next"`
		}
		if err := e.API.Do(ctx, "GET", "/v1/clients?limit=2&cursor="+cursor, nil, &pg); err != nil {
			t.Fatal(err)
		}
		if len(pg.Clients) > 2 || pg.Truncated != (pg.Next != "") {
			t.Fatalf("page %+v", pg)
		}
		for _, c := range pg.Clients {
			all = append(all, c.ClientID)
		}
		if cursor = pg.Next; cursor == "" {
			break
		}
	}
	seen := map[string]bool{}
	for _, id := range all {
		if seen[id] {
			t.Fatalf("%s twice in %v", id, all)
		}
		seen[id] = true
	}
	if len(all) < 4 {
		t.Fatalf("%d clients over the pages", len(all))
	}
	for _, path := range []string{"/v1/staff?limit=0", "/v1/credentials?cursor=%25", "/v1/clients?limit=5000"} {
		if err := e.API.Do(ctx, "GET", path, nil, nil); err == nil || !strings.Contains(err.Error(), "limit must be") {
			t.Errorf("fail/%s: %v", path, err)
		}
	}
}
