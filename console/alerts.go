package console

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/detect"
)

// AlertPageSize is how many rows, groups or alerts, one page of the alert
// list shows.
const AlertPageSize = 50

// Groupings of the alert list.
const (
	groupIncident = "incident" // one row per incident and rule (the default)
	groupRule     = "rule"     // one row per rule
	groupNone     = "none"     // every alert
)

// alertFilter is the alert page's filter (severity, rule, incident, free
// text), its grouping and the page shown.
type alertFilter struct {
	Severity string
	Rule     string
	Incident string
	Q        string
	Group    string
	Page     int
}

func filterOf(r *http.Request) alertFilter {
	q := r.URL.Query()
	f := alertFilter{Severity: q.Get("severity"), Rule: q.Get("rule"), Incident: q.Get("incident"),
		Q: strings.TrimSpace(q.Get("q")), Group: q.Get("group"), Page: 1}
	if f.Group != groupRule && f.Group != groupNone {
		f.Group = groupIncident
	}
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 1 {
		f.Page = n
	}
	return f
}

// Query is the filter (not the grouping or page) as a URL query string.
func (f alertFilter) Query() string {
	v := url.Values{}
	add := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	add("severity", f.Severity)
	add("rule", f.Rule)
	add("incident", f.Incident)
	add("q", f.Q)
	return v.Encode()
}

// Link is the alert list with this filter, grouped by group, at page.
func (f alertFilter) Link(group string, page int) string {
	q := f.Query()
	add := func(s string) {
		if q != "" {
			q += "&"
		}
		q += s
	}
	if group != groupIncident {
		add("group=" + group)
	}
	if page > 1 {
		add("page=" + strconv.Itoa(page))
	}
	if q == "" {
		return Prefix + "/alerts"
	}
	return Prefix + "/alerts?" + q
}

// PageLink is this view at page n.
func (f alertFilter) PageLink(n int) string { return f.Link(f.Group, n) }

// GroupLink is page 1 of this filter grouped by g.
func (f alertFilter) GroupLink(g string) string { return f.Link(g, 1) }

// drill narrows f to one group's alerts, listed one by one.
func (f alertFilter) drill(incident, rule string) string {
	f.Incident, f.Rule = cmp.Or(incident, f.Incident), rule
	return f.Link(groupNone, 1)
}

func (f alertFilter) match(a detect.Alert, n *namer) bool {
	if f.Severity != "" && string(a.Severity) != f.Severity {
		return false
	}
	if f.Rule != "" && a.Rule != f.Rule {
		return false
	}
	if f.Incident != "" && a.Incident != f.Incident {
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
	if n != nil {
		e := n.name(a.Entity)
		return strings.Contains(strings.ToLower(e.Name+" "+e.Detail+" "+e.Flag), q)
	}
	return false
}

// alertRow is one alert with its entity named.
type alertRow struct {
	detect.Alert
	Named entity
}

// alertGroup is the alerts of one incident and rule (or of one rule).
type alertGroup struct {
	Incident  string
	Rule      string
	Severity  detect.Severity
	Alerts    int
	Events    int64
	FirstSeen time.Time
	LastSeen  time.Time
	Entities  []entity // the most active few
	Distinct  int      // distinct entities
	Only      string   // the alert's id when the group holds one
	Link      string   // the group's alerts, listed
}

// topEntities is how many entities a group row names.
const topEntities = 3

// groupAlerts groups as by incident and rule (or by rule alone), the
// groups with the latest activity first.
func groupAlerts(as []detect.Alert, by string, f alertFilter, n *namer) []alertGroup {
	type acc struct {
		g        alertGroup
		entities map[string]int64
	}
	idx := map[string]*acc{}
	var order []*acc
	for _, a := range as {
		inc := a.Incident
		if by == groupRule {
			inc = ""
		}
		k := inc + "\x00" + a.Rule
		g := idx[k]
		if g == nil {
			g = &acc{g: alertGroup{Incident: inc, Rule: a.Rule, Severity: a.Severity, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, Only: a.ID},
				entities: map[string]int64{}}
			idx[k] = g
			order = append(order, g)
		}
		g.g.Alerts++
		g.g.Events += a.Count
		g.g.FirstSeen = minTime(g.g.FirstSeen, a.FirstSeen)
		g.g.LastSeen = maxTime(g.g.LastSeen, a.LastSeen)
		if severityRank(a.Severity) < severityRank(g.g.Severity) {
			g.g.Severity = a.Severity
		}
		g.entities[a.Entity] += a.Count
	}
	out := make([]alertGroup, 0, len(order))
	for _, g := range order {
		top := topCounts(g.entities, topEntities)
		g.g.Entities = n.names(top)
		g.g.Distinct = len(g.entities)
		if g.g.Alerts > 1 {
			g.g.Only = ""
		}
		g.g.Link = f.drill(g.g.Incident, g.g.Rule)
		out = append(out, g.g)
	}
	slices.SortStableFunc(out, func(a, b alertGroup) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.Incident, b.Incident), cmp.Compare(a.Rule, b.Rule))
	})
	return out
}

// topCounts returns the keys of m with the largest counts, at most k, the
// largest first (ties by key).
func topCounts(m map[string]int64, k int) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b)) })
	return keys[:min(k, len(keys))]
}

var severities = []detect.Severity{detect.Critical, detect.High, detect.Medium, detect.Low, detect.Info}

func severityRank(s detect.Severity) int {
	if i := slices.Index(severities, s); i >= 0 {
		return i
	}
	return len(severities)
}

// pager is one page of a list: which rows it shows and where the
// neighbouring pages are.
type pager struct {
	Page, Pages  int
	From, To, Of int // rows From–To (1-based) of Of
	Prev, Next   string
	First, Last  string
}

// page cuts n rows into pages of size and returns the bounds of page p
// (clamped into range) with links made by link.
func paginate(n, p, size int, link func(int) string) (pager, int, int) {
	pages := max(1, (n+size-1)/size)
	p = min(max(1, p), pages)
	lo, hi := (p-1)*size, min(n, p*size)
	pg := pager{Page: p, Pages: pages, From: min(n, lo+1), To: hi, Of: n}
	if p > 1 {
		pg.Prev, pg.First = link(p-1), link(1)
	}
	if p < pages {
		pg.Next, pg.Last = link(p+1), link(pages)
	}
	return pg, lo, hi
}

type alertsView struct {
	Filter     alertFilter
	Groups     []alertGroup
	Alerts     []alertRow
	Pager      pager
	Rules      []string
	Severities []detect.Severity
	Total      int // alerts in memory
	Matched    int // alerts the filter matches
	Live       bool
	OverTime   series
	TopEntity  series
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request) {
	f := filterOf(r)
	n := c.namer(r.Context())
	all := c.cfg.Detect.Alerts()
	v := alertsView{Filter: f, Total: len(all), Severities: severities}
	// Newest first.
	matched := make([]detect.Alert, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		if f.match(all[i], n) {
			matched = append(matched, all[i])
		}
	}
	v.Matched = len(matched)
	for _, a := range all {
		if !slices.Contains(v.Rules, a.Rule) {
			v.Rules = append(v.Rules, a.Rule)
		}
	}
	slices.Sort(v.Rules)
	var lo, hi int
	if f.Group == groupNone {
		v.Pager, lo, hi = paginate(len(matched), f.Page, AlertPageSize, f.PageLink)
		for _, a := range matched[lo:hi] {
			v.Alerts = append(v.Alerts, alertRow{Alert: a, Named: n.name(a.Entity)})
		}
	} else {
		groups := groupAlerts(matched, f.Group, f, n)
		v.Pager, lo, hi = paginate(len(groups), f.Page, AlertPageSize, f.PageLink)
		v.Groups = groups[lo:hi]
	}
	v.Live = v.Pager.Page == 1
	v.OverTime, v.TopEntity = alertCharts(matched, n)
	c.render(w, r, http.StatusOK, "alerts.html", "Alerts", v)
}

// namesFresh is how long the alert stream keeps the names it read.
const namesFresh = 30 * time.Second

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
	// Names are read afresh now and then, not for every alert of a flood.
	n, named := c.namer(r.Context()), c.now()
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
			if c.now().Sub(named) > namesFresh {
				n, named = c.namer(r.Context()), c.now()
			}
			if !f.match(a, n) {
				continue
			}
			var buf bytes.Buffer
			if err := t.ExecuteTemplate(&buf, "row", alertRow{Alert: a, Named: n.name(a.Entity)}); err != nil {
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
	Named  entity
	Attrs  []attrView
	Events eventsTable
}

// attrView is one attribute of an alert, named when it is an entity.
type attrView struct {
	Key, Value string
	Named      *entity
}

// attrKinds are the alert attributes that name an entity, as entity kinds.
var attrKinds = map[string]string{"src_ip": "ip", "kid": "kid", "subject": "subject", "network": "net"}

func alertAttrs(a detect.Alert, n *namer) []attrView {
	out := make([]attrView, 0, len(a.Attrs))
	for _, k := range slices.Sorted(maps.Keys(a.Attrs)) {
		v := attrView{Key: k, Value: a.Attrs[k]}
		if kind, ok := attrKinds[k]; ok && v.Value != "" {
			e := n.name(kind + ":" + v.Value)
			v.Named = &e
		}
		out = append(out, v)
	}
	return out
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
	n := c.namer(r.Context())
	v := alertView{Alert: *found, Named: n.name(found.Entity), Attrs: alertAttrs(*found, n), Events: c.sampleEvents(r, found.Samples)}
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
