package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `custos serve` on the embedded store as a separate process: alerts and
// incidents raised from ingested events are listed by GET /v1/alerts,
// GET /v1/incidents, /v1/incidents/{id} and `custos incidents list` with the
// same ids after kill -9 and after a graceful restart, and the ones raised
// after each restart are added to them.
func TestAlertsSurviveRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	api := freeAddr(t)
	data := filepath.Join(dir, "data")
	var cmd *exec.Cmd
	out := &lockedBuffer{}
	start := func() {
		cmd = exec.Command(bin, "serve", "--data", data, "--listen", api, "--issuer", "http://"+api)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the server", func() bool {
			r, err := http.Get("http://" + api + "/readyz")
			if err == nil {
				r.Body.Close()
			}
			return err == nil && r.StatusCode == 200
		})
	}
	stop := func(sig syscall.Signal) {
		_ = cmd.Process.Signal(sig)
		_ = cmd.Wait()
	}
	t.Cleanup(func() {
		stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("custos serve:\n%s", out)
		}
	})
	start()
	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, v any) int {
		req, _ := http.NewRequest("GET", "http://"+api+path, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, b)
		}
		return resp.StatusCode
	}
	// raise ingests log lines claiming tokens under kids never issued: each
	// kid is an alert of its own.
	raise := func(from, to int) {
		var body strings.Builder
		now := time.Now().UTC().Format(time.RFC3339Nano)
		for i := from; i < to; i++ {
			fmt.Fprintf(&body, `{"time":%q,"gateway":"edge-log","request_id":"r-%d","method":"GET","path":"/api/members/1/profile","status":401,"src_ip":"203.0.113.%d","verdict":"deny","reason":"not_issued","token":{"kid":"kid-%d","jti":"j-%d"}}`+"\n", now, i, i, i, i)
		}
		req, _ := http.NewRequest("POST", "http://"+api+"/v1/events?format=custos", strings.NewReader(body.String()))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /v1/events: %d", resp.StatusCode)
		}
	}
	type listed struct {
		alerts    []string // ids, sorted
		incidents []string
		byInc     map[string][]string // incident -> its alerts' ids, sorted
	}
	list := func() listed {
		var as struct {
			Alerts []struct {
				ID       string `json:"id"`
				Incident string `json:"incident_id"`
			} `json:"alerts"`
		}
		var is struct {
			Incidents []struct {
				ID string `json:"id"`
			} `json:"incidents"`
		}
		if get("/v1/alerts", &as) != 200 || get("/v1/incidents", &is) != 200 {
			t.Fatal("listing failed")
		}
		l := listed{byInc: map[string][]string{}}
		for _, a := range as.Alerts {
			l.alerts = append(l.alerts, a.ID)
		}
		for _, inc := range is.Incidents {
			l.incidents = append(l.incidents, inc.ID)
			var one struct {
				Alerts []struct {
					ID string `json:"id"`
				} `json:"alerts"`
			}
			if st := get("/v1/incidents/"+inc.ID, &one); st != 200 {
				t.Fatalf("GET /v1/incidents/%s: %d", inc.ID, st)
			}
			for _, a := range one.Alerts {
				l.byInc[inc.ID] = append(l.byInc[inc.ID], a.ID)
			}
			slices.Sort(l.byInc[inc.ID])
		}
		slices.Sort(l.alerts)
		slices.Sort(l.incidents)
		return l
	}
	waitAlerts := func(n int) listed {
		var l listed
		waitFor(t, fmt.Sprintf("%d alerts listed", n), func() bool { l = list(); return len(l.alerts) >= n })
		if len(l.alerts) != n {
			t.Fatalf("%d alerts listed, want %d: %v", len(l.alerts), n, l.alerts)
		}
		return l
	}
	same := func(when string, before, after listed) {
		t.Helper()
		if !slices.Equal(before.alerts, after.alerts) || !slices.Equal(before.incidents, after.incidents) {
			t.Fatalf("%s: listed alerts %v incidents %v, before %v %v", when, after.alerts, after.incidents, before.alerts, before.incidents)
		}
		for id, as := range before.byInc {
			if !slices.Equal(as, after.byInc[id]) {
				t.Fatalf("%s: incident %s has alerts %v, before %v", when, id, after.byInc[id], as)
			}
		}
	}

	raise(0, 5)
	first := waitAlerts(5)
	if len(first.incidents) == 0 {
		t.Fatal("no incident listed")
	}
	stop(syscall.SIGKILL)
	start()
	same("after kill -9", first, list())
	o, _, code := cli(t, "incidents", "list", "--json", "--server", "http://"+api, "--data", data)
	for _, id := range first.incidents {
		if code != 0 || !strings.Contains(o, id) {
			t.Fatalf("incidents list after kill -9: %d, %s missing from %q", code, id, o)
		}
	}

	raise(5, 8)
	second := waitAlerts(8)
	for _, id := range first.alerts {
		if !slices.Contains(second.alerts, id) {
			t.Fatalf("alert %s gone after new ones were raised", id)
		}
	}
	stop(syscall.SIGTERM)
	start()
	same("after a graceful restart", second, list())
}
