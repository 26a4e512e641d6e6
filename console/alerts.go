package console

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/detect"
)

// MaxAlertRows bounds the alerts one page lists.
const MaxAlertRows = 500

// alertFilter is the alert page's filter: severity, rule and free text.
type alertFilter struct {
	Severity string
	Rule     string
	Q        string
}

func filterOf(r *http.Request) alertFilter {
	q := r.URL.Query()
	return alertFilter{Severity: q.Get("severity"), Rule: q.Get("rule"), Q: strings.TrimSpace(q.Get("q"))}
}

// Query is the filter as a URL query string.
func (f alertFilter) Query() string {
	v := make([]string, 0, 3)
	add := func(k, s string) {
		if s != "" {
			v = append(v, k+"="+url.QueryEscape(s))
		}
	}
	add("severity", f.Severity)
	add("rule", f.Rule)
	add("q", f.Q)
	return strings.Join(v, "&")
}

func (f alertFilter) match(a detect.Alert) bool {
	if f.Severity != "" && string(a.Severity) != f.Severity {
		return false
	}
	if f.Rule != "" && a.Rule != f.Rule {
		return false
	}
	if f.Q == "" {
		return true
	}
	q := strings.ToLower(f.Q)
	if strings.Contains(strings.ToLower(a.Rule+" "+a.Entity+" "+a.Summary+" "+a.ID+" "+a.Incident), q) {
		return true
	}
	for _, v := range a.Attrs {
		if strings.Contains(strings.ToLower(v), q) {
			return true
		}
	}
	return false
}

type alertsView struct {
	Filter     alertFilter
	Alerts     []detect.Alert
	Rules      []string
	Severities []detect.Severity
	Total      int
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request) {
	f := filterOf(r)
	all := c.cfg.Detect.Alerts()
	v := alertsView{Filter: f, Total: len(all), Severities: []detect.Severity{detect.Critical, detect.High, detect.Medium, detect.Low, detect.Info}}
	for i := len(all) - 1; i >= 0 && len(v.Alerts) < MaxAlertRows; i-- {
		if f.match(all[i]) {
			v.Alerts = append(v.Alerts, all[i])
		}
	}
	for _, a := range all {
		if !slices.Contains(v.Rules, a.Rule) {
			v.Rules = append(v.Rules, a.Rule)
		}
	}
	slices.Sort(v.Rules)
	if r.Header.Get("HX-Request") != "" && r.Header.Get("HX-Target") == "alert-rows" {
		c.fragment(w, r, "alerts.html", "rows", v.Alerts)
		return
	}
	c.render(w, r, http.StatusOK, "alerts.html", "Live alerts", v)
}

// alertStream sends each new alert matching the filter as a rendered table
// row, in server-sent events named "alert".
func (c *Console) alertStream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	f := filterOf(r)
	ch := c.alerts.subscribe()
	defer c.alerts.unsubscribe(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": connected\n\n")
	fl.Flush()
	ck, _ := r.Cookie(SessionCookie)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	t := c.pages["alerts.html"]
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			// The stream ends with the session.
			if ck == nil {
				return
			}
			if _, ok := c.sessions.Lookup(ck.Value); !ok {
				return
			}
			fmt.Fprint(w, ": ping\n\n")
			fl.Flush()
		case a := <-ch:
			if !f.match(a) {
				continue
			}
			var buf bytes.Buffer
			if err := t.ExecuteTemplate(&buf, "row", a); err != nil {
				c.log.Error("console alert row failed", "err", err)
				return
			}
			fmt.Fprint(w, "event: alert\n")
			for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				fmt.Fprintf(w, "data: %s\n", ln)
			}
			fmt.Fprint(w, "\n")
			fl.Flush()
		}
	}
}

// eventIDPattern is what the console accepts as a request id in a query.
var eventIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:@/+=-]{1,128}$`)

type eventsTable struct {
	Columns []string
	Rows    [][]string
	Err     string
}

type alertView struct {
	Alert  detect.Alert
	Events eventsTable
}

func (c *Console) alertPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var found *detect.Alert
	for _, a := range c.cfg.Detect.Alerts() {
		if a.ID == id {
			found = &a
			break
		}
	}
	if found == nil {
		c.fail(w, r, http.StatusNotFound, "no such alert (it may have aged out of memory)", nil)
		return
	}
	v := alertView{Alert: *found, Events: c.sampleEvents(r, found.Samples)}
	c.render(w, r, http.StatusOK, "alert.html", "Alert "+found.Rule, v)
}

// sampleEvents reads the alert's sample events back from the event store.
func (c *Console) sampleEvents(r *http.Request, ids []string) eventsTable {
	var quoted []string
	for _, id := range ids {
		if eventIDPattern.MatchString(id) {
			quoted = append(quoted, "'"+id+"'")
		}
	}
	if len(quoted) == 0 {
		return eventsTable{Err: "this alert names no events"}
	}
	st, err := c.eventStore()
	if err != nil {
		return eventsTable{Err: err.Error()}
	}
	if c.cfg.FlushEvents != nil {
		if err := c.cfg.FlushEvents(); err != nil {
			c.log.Warn("event flush failed", "err", err)
		}
	}
	q := "SELECT time, request_id, method, path, status, verdict, reason, src_ip, country, token_kid, token_sub, subject FROM events WHERE request_id IN (" +
		strings.Join(quoted, ",") + ") ORDER BY time LIMIT 100"
	cols, rows, err := st.SQL(r.Context(), q)
	if err != nil {
		return eventsTable{Err: "the events could not be read: " + err.Error()}
	}
	out := eventsTable{Columns: cols}
	for _, row := range rows {
		s := make([]string, len(row))
		for i, v := range row {
			switch x := v.(type) {
			case time.Time:
				s[i] = x.UTC().Format("2006-01-02 15:04:05.000Z")
			case nil:
				s[i] = ""
			default:
				s[i] = fmt.Sprint(x)
			}
		}
		out.Rows = append(out.Rows, s)
	}
	return out
}
