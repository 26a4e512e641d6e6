package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
)

var errNotFound = errors.New("console: no such incident")

// MaxIndicatorText bounds the indicator text a scope request may carry.
const MaxIndicatorText = 8 << 10

// incidentRow is an incident with its first entities named.
type incidentRow struct {
	detect.Incident
	Named []entity
}

// How many entities a row of the incident list, and an incident's page, name.
const (
	listedEntities = 4
	shownEntities  = 20
)

func (c *Console) incidentsPage(w http.ResponseWriter, r *http.Request) {
	incs := c.cfg.Detect.Incidents()
	slices.Reverse(incs)
	n := c.namer(r.Context())
	rows := make([]incidentRow, len(incs))
	for i, inc := range incs {
		rows[i] = incidentRow{Incident: inc, Named: n.names(inc.Entities[:min(listedEntities, len(inc.Entities))])}
	}
	c.render(w, r, http.StatusOK, "incidents.html", "Incidents", rows)
}

type incidentView struct {
	Incident   detect.Incident
	Entities   []entity
	Alerts     int
	Events     int64
	Groups     []alertGroup // the incident's alerts by rule
	AllLink    string       // every alert of the incident, listed
	Actions    []detect.ActionRecord
	Deadlines  []forensics.Deadline
	Timeline   series
	TopEntity  series
	Indicators string
}

func (c *Console) incident(id string) (detect.Incident, []detect.Alert, bool) {
	var inc detect.Incident
	found := false
	for _, i := range c.cfg.Detect.Incidents() {
		if i.ID == id {
			inc, found = i, true
			break
		}
	}
	if !found {
		return inc, nil, false
	}
	var as []detect.Alert
	for _, a := range c.cfg.Detect.Alerts() {
		if a.Incident == id || slices.Contains(inc.Alerts, a.ID) {
			as = append(as, a)
		}
	}
	return inc, as, true
}

func (c *Console) incidentPage(w http.ResponseWriter, r *http.Request) {
	inc, as, ok := c.incident(r.PathValue("id"))
	if !ok {
		c.fail(w, r, http.StatusNotFound, "no such incident", nil)
		return
	}
	n := c.namer(r.Context())
	f := alertFilter{Incident: inc.ID}
	v := incidentView{Incident: inc, Alerts: len(as), Entities: n.names(inc.Entities[:min(shownEntities, len(inc.Entities))]), Groups: groupAlerts(as, groupIncident, f, n),
		AllLink: f.Link(groupNone, 1), Deadlines: forensics.Deadlines(inc.Awareness, c.now()), Timeline: timeline(as)}
	for _, a := range as {
		v.Events += a.Count
	}
	_, v.TopEntity = alertCharts(as, n)
	for _, a := range c.cfg.Detect.Actions() {
		if slices.ContainsFunc(as, func(x detect.Alert) bool { return x.ID == a.AlertID }) {
			v.Actions = append(v.Actions, a)
		}
	}
	v.Indicators = strings.Join(indicatorSpecs(indicatorsFor(as)), "\n")
	c.render(w, r, http.StatusOK, "incident.html", "Incident "+inc.ID, v)
}

// timeline buckets an incident's alerts by minute (by hour past a day):
// alerts raised and the events they matched.
func timeline(as []detect.Alert) series {
	s := series{Series: []line{{Label: "events matched", Class: "bad"}, {Label: "alerts raised", Class: "info"}}}
	sp, ok := spanOf(as)
	if !ok {
		return s
	}
	s.X, s.Unit = sp.xs(), "per "+sp.unit
	s.Series[0].Values = make([]float64, sp.n)
	s.Series[1].Values = make([]float64, sp.n)
	for _, a := range as {
		s.Series[0].Values[sp.index(a.FirstSeen)] += float64(a.Count)
		s.Series[1].Values[sp.index(a.Raised)]++
	}
	return s
}

func minTime(t time.Time, ts ...time.Time) time.Time {
	for _, x := range ts {
		if !x.IsZero() && x.Before(t) {
			t = x
		}
	}
	return t
}

func maxTime(t time.Time, ts ...time.Time) time.Time {
	for _, x := range ts {
		if x.After(t) {
			t = x
		}
	}
	return t
}

// indicatorsFor derives the events that belong to an incident from its
// alerts: refusal reasons that are themselves evidence, attacker sources,
// token ids and withdrawn keys. It never selects by the kid of a key
// legitimate traffic also uses, which would put every customer in scope.
func indicatorsFor(as []detect.Alert) forensics.Indicators {
	var ind forensics.Indicators
	add := func(list *[]string, v string) {
		if v != "" && !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, a := range as {
		at := a.Attrs
		switch a.Rule {
		case detect.RuleNotIssued, detect.RuleDecoySubject:
			if r := event.Reason(a.Rule); !slices.Contains(ind.Reasons, r) {
				ind.Reasons = append(ind.Reasons, r)
			}
		case detect.RuleRevokedKey:
			add(&ind.KeyIDs, at["kid"])
		}
		switch a.Rule {
		case detect.RuleNotIssued, detect.RuleDecoySubject, detect.RuleEnumeration, detect.RuleSequentialWalk,
			detect.RuleUnknownSubject, detect.RuleForeignOrigin, detect.RuleIPRotation:
			add(&ind.Sources, at["src_ip"])
			if ip, ok := strings.CutPrefix(a.Entity, "ip:"); ok {
				add(&ind.Sources, ip)
			}
		}
		switch a.Rule {
		case detect.RuleNotIssued, detect.RuleDecoySubject, detect.RuleIPRotation, detect.RuleTokenWithoutLogin, detect.RuleRevokedKey:
			add(&ind.JTIs, at["jti"])
		}
	}
	slices.Sort(ind.Reasons)
	slices.Sort(ind.Sources)
	slices.Sort(ind.JTIs)
	slices.Sort(ind.KeyIDs)
	return ind
}

// indicatorSpecs writes ind in the command-line form forensics.ParseIndicators reads.
func indicatorSpecs(ind forensics.Indicators) []string {
	var out []string
	for _, v := range ind.KeyIDs {
		out = append(out, "kid:"+v)
	}
	for _, v := range ind.JTIs {
		out = append(out, "jti:"+v)
	}
	for _, v := range ind.Reasons {
		out = append(out, "reason:"+string(v))
	}
	for _, v := range ind.RequestIDs {
		out = append(out, "request:"+v)
	}
	for _, v := range ind.Sources {
		out = append(out, "ip:"+v)
	}
	for _, v := range ind.ASNs {
		out = append(out, "asn:"+strconv.FormatUint(uint64(v), 10))
	}
	for _, v := range ind.Countries {
		out = append(out, "country:"+v)
	}
	for _, v := range ind.Routes {
		out = append(out, "route:"+v)
	}
	for _, v := range ind.Subjects {
		out = append(out, fmt.Sprintf("subject:%d-%d", v.From, v.To))
	}
	if !ind.From.IsZero() {
		out = append(out, "from:"+ind.From.UTC().Format(time.RFC3339))
	}
	if !ind.To.IsZero() {
		out = append(out, "to:"+ind.To.UTC().Format(time.RFC3339))
	}
	return out
}

// scopeIndicators reads the ind parameter (one indicator per line) or, when
// absent, derives the indicators from the incident's alerts.
func scopeIndicators(r *http.Request, as []detect.Alert) (forensics.Indicators, string, error) {
	text := r.URL.Query().Get("ind")
	if len(text) > MaxIndicatorText {
		return forensics.Indicators{}, "", fmt.Errorf("%w: more than %d bytes", forensics.ErrBadIndicator, MaxIndicatorText)
	}
	if strings.TrimSpace(text) == "" {
		ind := indicatorsFor(as)
		if err := ind.Validate(); err != nil {
			return ind, "", err
		}
		return ind, strings.Join(indicatorSpecs(ind), "\n"), nil
	}
	var specs []string
	for _, ln := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' || r == ',' }) {
		if ln = strings.TrimSpace(ln); ln != "" {
			specs = append(specs, ln)
		}
	}
	ind, err := forensics.ParseIndicators(specs)
	return ind, strings.Join(specs, "\n"), err
}

type scopeView struct {
	IncidentID string
	Indicators string
	Query      string
	Scope      *forensics.Scope
	Hourly     series
	Err        string
}

// computeScope runs the incident's scope; the caller closes it.
func (c *Console) computeScope(r *http.Request) (*forensics.Scope, detect.Incident, string, error) {
	inc, as, ok := c.incident(r.PathValue("id"))
	if !ok {
		return nil, inc, "", errNotFound
	}
	ind, text, err := scopeIndicators(r, as)
	if err != nil {
		return nil, inc, text, err
	}
	st, err := c.eventStore()
	if err != nil {
		return nil, inc, text, err
	}
	if c.cfg.FlushEvents != nil {
		if err := c.cfg.FlushEvents(); err != nil {
			c.log.Warn("event flush failed", "err", err)
		}
	}
	sc, err := st.Scope(r.Context(), ind, nil)
	return sc, inc, text, err
}

func (c *Console) scopeFragment(w http.ResponseWriter, r *http.Request) {
	sc, inc, text, err := c.computeScope(r)
	v := scopeView{IncidentID: inc.ID, Indicators: text}
	if text != "" {
		v.Query = "ind=" + url.QueryEscape(text)
	}
	if err != nil {
		v.Err = err.Error()
		c.fragment(w, r, "incident.html", "scope", v)
		return
	}
	defer sc.Close()
	v.Scope = sc
	v.Hourly = series{Unit: "requests per hour", Series: []line{{Label: "exposures", Class: "bad"}, {Label: "attempts", Class: "info"}}}
	for _, b := range sc.Hourly {
		v.Hourly.X = append(v.Hourly.X, b.Start.Unix())
		v.Hourly.Series[0].Values = append(v.Hourly.Series[0].Values, float64(b.Exposures))
		v.Hourly.Series[1].Values = append(v.Hourly.Series[1].Values, float64(b.Attempts))
	}
	c.fragment(w, r, "incident.html", "scope", v)
}

func (c *Console) notificationCSV(w http.ResponseWriter, r *http.Request) {
	sc, inc, _, err := c.computeScope(r)
	if err != nil {
		c.scopeError(w, r, err)
		return
	}
	defer sc.Close()
	if !c.audited(w, r, "console.export.notification_list", inc.ID, sc) {
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="notification-%s.csv"`, safeFileName(inc.ID)))
	w.Header().Set("Cache-Control", "no-store")
	if err := sc.WriteNotificationCSV(w); err != nil {
		c.log.Error("notification list export failed", "incident", inc.ID, "err", err)
	}
}

func (c *Console) reportMarkdown(w http.ResponseWriter, r *http.Request) {
	sc, inc, _, err := c.computeScope(r)
	if err != nil {
		c.scopeError(w, r, err)
		return
	}
	defer sc.Close()
	_, as, _ := c.incident(inc.ID)
	meta := forensics.ReportMeta{Incident: inc.ID, Organization: c.cfg.Organization, Contact: c.cfg.Contact, Awareness: inc.Awareness}
	for _, a := range c.cfg.Detect.Actions() {
		if slices.ContainsFunc(as, func(x detect.Alert) bool { return x.ID == a.AlertID }) && !a.DryRun && a.Error == "" {
			meta.Measures = append(meta.Measures, fmt.Sprintf("%s %s (%s)", a.Action, a.Target, a.Time.UTC().Format(time.RFC3339)))
		}
	}
	if !c.audited(w, r, "console.export.report", inc.ID, sc) {
		return
	}
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="report-%s.md"`, safeFileName(inc.ID)))
	w.Header().Set("Cache-Control", "no-store")
	if err := sc.Report(meta, c.now()).WriteMarkdown(w); err != nil {
		c.log.Error("report export failed", "incident", inc.ID, "err", err)
	}
}

// audited records who takes personal data (the notification list) or the
// report out of the console, before it is sent; if the audit log cannot
// record it, the export is refused.
func (c *Console) audited(w http.ResponseWriter, r *http.Request, kind, incident string, sc *forensics.Scope) bool {
	err := c.cfg.Audit.Append(r.Context(), kind, map[string]any{
		"staff_id": sessionOf(r.Context()).StaffID, "incident": incident, "subjects": sc.Subjects,
		"indicators": indicatorSpecs(sc.Indicators),
	})
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "the export could not be recorded in the audit log", err)
		return false
	}
	return true
}

func (c *Console) scopeError(w http.ResponseWriter, r *http.Request, err error) {
	if err == errNotFound {
		c.fail(w, r, http.StatusNotFound, "no such incident", nil)
		return
	}
	c.fail(w, r, http.StatusBadRequest, "the scope could not be computed", err)
}

func safeFileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
