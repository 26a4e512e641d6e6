// Package sigma converts Sigma rules for web logs (logsource category
// webserver or proxy) into custos CEL rules, refusing by name what custos
// cannot express rather than converting it loosely.
//
// Rules are parsed with github.com/bradleyjkemp/sigma-go; this package only
// maps the parsed detection onto the fields of a custos access event. Sigma
// matches strings case-insensitively with * and ? wildcards, so every string
// test becomes an RE2 match; |re keeps the rule's own expression.
package sigma

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	sigmago "github.com/bradleyjkemp/sigma-go"
	"gopkg.in/yaml.v3"

	"github.com/custos-dev/custos/detect"
)

// ErrUnsupported is wrapped by every refusal of a rule custos cannot express.
var ErrUnsupported = errors.New("cannot convert")

// DefaultWindow is the window of a count() aggregation without a timeframe.
const DefaultWindow = 5 * time.Minute

// Categories are the logsource categories converted.
var Categories = []string{"webserver", "proxy"}

type fieldKind int

const (
	kString fieldKind = iota
	kInt
)

type field struct {
	name string // custos event field
	kind fieldKind
}

// fields maps the Sigma taxonomy of web logs (W3C extended log names, as
// SigmaHQ's web rules use them) and custos's own names onto event fields.
var fields = map[string]field{
	"c-ip": {"src_ip", kString}, "clientip": {"src_ip", kString}, "src_ip": {"src_ip", kString},
	"cs-method": {"method", kString}, "method": {"method", kString},
	"c-uri": {"path", kString}, "cs-uri": {"path", kString}, "c-uri-stem": {"path", kString}, "cs-uri-stem": {"path", kString}, "path": {"path", kString},
	"c-useragent": {"user_agent", kString}, "cs-user-agent": {"user_agent", kString}, "cs(user-agent)": {"user_agent", kString}, "user_agent": {"user_agent", kString},
	"sc-status": {"status", kInt}, "status": {"status", kInt},
	"sc-bytes": {"bytes", kInt}, "bytes": {"bytes", kInt},
	"route": {"route", kString}, "country": {"country", kString}, "asn": {"asn", kInt},
	"gateway": {"gateway", kString}, "request_id": {"request_id", kString},
	"verdict": {"verdict", kString}, "reason": {"reason", kString}, "subject": {"subject", kString},
	"token.jti": {"token.jti", kString}, "token.kid": {"token.kid", kString}, "token.sub": {"token.sub", kString}, "token.aud": {"token.aud", kString},
	"latency_us": {"latency_us", kInt},
}

// why explains the web-log fields custos does not record.
var why = map[string]string{
	"cs-uri-query": "access events keep the path, not the query string", "c-uri-query": "access events keep the path, not the query string",
	"cs-referrer": "access events do not record the Referer", "cs-host": "access events do not record the Host",
	"cs-cookie": "access events do not record cookies", "r-dns": "access events do not record the upstream name",
	"c-uri-extension": "access events do not split the path's extension", "dst_ip": "access events do not record the destination",
	"cs-bytes": "access events do not record request sizes",
}

var levels = map[string]detect.Severity{
	"informational": detect.Info, "low": detect.Low, "medium": detect.Medium, "high": detect.High, "critical": detect.Critical,
}

// aggregation is a condition's "| count() by FIELD > N" part.
type aggregation struct {
	text      string
	timeframe time.Duration
}

var aggRE = regexp.MustCompile(`^\s*count\(\s*([A-Za-z0-9_.()-]*)\s*\)(?:\s+by\s+([A-Za-z0-9_.()-]+))?\s*(>=|<=|!=|=|>|<)\s*([0-9]+)\s*$`)

// Convert parses one Sigma rule and returns the equivalent custos rule.
//
// sigma-go (v0.6) cannot decode a detection's timeframe and its condition
// grammar takes no hyphen in an aggregation's field (count() by c-ip), the
// common case for web logs; so both are taken off the YAML before the
// parser sees it, and the aggregation is read here.
func Convert(src []byte) (detect.Rule, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return detect.Rule{}, fmt.Errorf("not a Sigma rule: %w", err)
	}
	agg, err := takeAggregation(&doc)
	if err != nil {
		return detect.Rule{}, fmt.Errorf("not a Sigma rule: %w", err)
	}
	var r sigmago.Rule
	if len(doc.Content) == 0 {
		return detect.Rule{}, errors.New("not a Sigma rule: empty document")
	}
	if err := doc.Content[0].Decode(&r); err != nil {
		return detect.Rule{}, fmt.Errorf("not a Sigma rule: %w", err)
	}
	if agg != nil {
		cond := &r.Detection.Conditions
		if len(*cond) != 1 {
			return detect.Rule{}, fmt.Errorf("%w %q: an aggregation in a list of conditions", ErrUnsupported, r.Title)
		}
		(*cond)[0].Aggregation = nil
	}
	return fromRule(r, agg)
}

// takeAggregation removes detection.timeframe and the "| ..." part of a
// single condition from doc.
func takeAggregation(doc *yaml.Node) (*aggregation, error) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a mapping")
	}
	top := doc.Content[0]
	var det *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "detection" && top.Content[i+1].Kind == yaml.MappingNode {
			det = top.Content[i+1]
		}
	}
	if det == nil {
		return nil, nil
	}
	var agg aggregation
	found := false
	for i := 0; i+1 < len(det.Content); i += 2 {
		k, v := det.Content[i], det.Content[i+1]
		switch {
		case k.Value == "timeframe" && v.Kind == yaml.ScalarNode:
			d, err := parseTimeframe(v.Value)
			if err != nil {
				return nil, err
			}
			agg.timeframe = d
			det.Content = append(det.Content[:i], det.Content[i+2:]...)
			i -= 2
		case k.Value == "condition" && v.Kind == yaml.ScalarNode:
			if search, rest, ok := strings.Cut(v.Value, "|"); ok {
				v.Value, agg.text, found = strings.TrimSpace(search), rest, true
			}
		}
	}
	if !found {
		if agg.timeframe > 0 {
			return &agg, nil // a timeframe alone changes nothing here
		}
		return nil, nil
	}
	return &agg, nil
}

// parseTimeframe reads a Sigma timeframe: a number and s, m, h or d.
func parseTimeframe(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 366 {
			return 0, fmt.Errorf("timeframe %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("timeframe %q", s)
	}
	return d, nil
}

// FromRule converts a parsed Sigma rule (see [Convert] for the
// aggregations sigma-go parses).
func FromRule(r sigmago.Rule) (detect.Rule, error) { return fromRule(r, nil) }

func fromRule(r sigmago.Rule, agg *aggregation) (detect.Rule, error) {
	out := detect.Rule{Name: Name(r), Severity: detect.Medium}
	refuse := func(format string, a ...any) (detect.Rule, error) {
		return detect.Rule{}, fmt.Errorf("%w %q: %s", ErrUnsupported, r.Title, fmt.Sprintf(format, a...))
	}
	cat := strings.ToLower(r.Logsource.Category)
	if cat != "webserver" && cat != "proxy" {
		return refuse("logsource category %q is not a web log (want webserver or proxy)", r.Logsource.Category)
	}
	if r.Level != "" {
		sev, ok := levels[strings.ToLower(r.Level)]
		if !ok {
			return refuse("unknown level %q", r.Level)
		}
		out.Severity = sev
	}
	d := r.Detection
	if len(d.Conditions) == 0 {
		return refuse("no condition")
	}
	if len(d.Searches) == 0 {
		return refuse("no search")
	}
	c := converter{searches: d.Searches, done: map[string]string{}}
	var ors []string
	if agg != nil && agg.text != "" {
		if err := aggregate(&out, agg.text, agg.timeframe); err != nil {
			return refuse("%v", err)
		}
	}
	for _, cond := range d.Conditions {
		if cond.Aggregation != nil {
			return refuse("aggregation %T (custos counts matches: count() by FIELD > N)", cond.Aggregation)
		}
		e, err := c.expr(cond.Search)
		if err != nil {
			return refuse("%v", err)
		}
		ors = append(ors, e)
	}
	out.Expr = strings.Join(ors, " || ")
	if len(ors) > 1 {
		out.Expr = "(" + strings.Join(ors, ") || (") + ")"
	}
	return out, nil
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// Name is the custos rule name of r: "sigma_" and its title in snake case,
// within the 64 characters a rule name may have.
func Name(r sigmago.Rule) string {
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(r.Title), "_"), "_")
	if n == "" {
		n = strings.Trim(nonName.ReplaceAllString(strings.ToLower(r.ID), "_"), "_")
	}
	n = "sigma_" + n
	if len(n) > 64 {
		n = strings.TrimRight(n[:64], "_")
	}
	return n
}

func aggregate(out *detect.Rule, text string, timeframe time.Duration) error {
	m := aggRE.FindStringSubmatch(text)
	if m == nil {
		return fmt.Errorf("aggregation %q (custos counts matches: count() by FIELD > N)", strings.TrimSpace(text))
	}
	if m[1] != "" {
		return fmt.Errorf("count(%s) counts distinct values; custos counts matches", m[1])
	}
	n, err := strconv.ParseUint(m[4], 10, 31)
	if err != nil {
		return fmt.Errorf("count threshold %s", m[4])
	}
	switch m[3] {
	case ">":
		out.Threshold = uint32(n) + 1
	case ">=":
		out.Threshold = uint32(max(n, 1))
	default:
		return fmt.Errorf("count() %s N: custos raises when a count reaches a threshold (> or >=)", m[3])
	}
	if m[2] != "" {
		f, err := lookup(m[2])
		if err != nil {
			return err
		}
		out.GroupBy = f.name
	}
	out.Window = timeframe
	if out.Window <= 0 {
		out.Window = DefaultWindow
	}
	return nil
}

func lookup(name string) (field, error) {
	k := strings.ToLower(name)
	if f, ok := fields[k]; ok {
		return f, nil
	}
	if w, ok := why[k]; ok {
		return field{}, fmt.Errorf("field %s: %s", name, w)
	}
	return field{}, fmt.Errorf("field %s is not in the web log taxonomy custos maps", name)
}

type converter struct {
	searches map[string]sigmago.Search
	done     map[string]string
}

func (c *converter) names(pattern string) ([]string, error) {
	var out []string
	for n := range c.searches {
		if ok, _ := path.Match(pattern, n); ok {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no search matches %q", pattern)
	}
	sort.Strings(out)
	return out, nil
}

func join(op string, parts []string) string {
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, " "+op+" ") + ")"
}

func (c *converter) each(names []string, op string) (string, error) {
	var parts []string
	for _, n := range names {
		e, err := c.search(n)
		if err != nil {
			return "", err
		}
		parts = append(parts, e)
	}
	return join(op, parts), nil
}

func (c *converter) expr(e sigmago.SearchExpr) (string, error) {
	switch x := e.(type) {
	case sigmago.And, sigmago.Or:
		var subs []sigmago.SearchExpr
		op := "&&"
		if o, ok := x.(sigmago.Or); ok {
			subs, op = o, "||"
		} else {
			subs = x.(sigmago.And)
		}
		var parts []string
		for _, s := range subs {
			p, err := c.expr(s)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return join(op, parts), nil
	case sigmago.Not:
		p, err := c.expr(x.Expr)
		if err != nil {
			return "", err
		}
		return "!(" + p + ")", nil
	case sigmago.SearchIdentifier:
		return c.search(x.Name)
	case sigmago.OneOfIdentifier:
		return c.search(x.Ident.Name)
	case sigmago.AllOfIdentifier:
		return c.search(x.Ident.Name)
	case sigmago.OneOfPattern, sigmago.AllOfPattern:
		pat, op := "", "||"
		if p, ok := x.(sigmago.OneOfPattern); ok {
			pat = p.Pattern
		} else {
			pat, op = x.(sigmago.AllOfPattern).Pattern, "&&"
		}
		names, err := c.names(pat)
		if err != nil {
			return "", err
		}
		return c.each(names, op)
	case sigmago.OneOfThem, sigmago.AllOfThem:
		names, _ := c.names("*")
		var keep []string
		for _, n := range names {
			if !strings.HasPrefix(n, "_") { // "them" leaves out searches named _x
				keep = append(keep, n)
			}
		}
		op := "||"
		if _, ok := x.(sigmago.AllOfThem); ok {
			op = "&&"
		}
		return c.each(keep, op)
	}
	return "", fmt.Errorf("condition %T", e)
}

// search converts one named search: a list of maps is OR'ed, the fields of
// one map AND'ed.
func (c *converter) search(name string) (string, error) {
	if e, ok := c.done[name]; ok {
		return e, nil
	}
	s, ok := c.searches[name]
	if !ok {
		return "", fmt.Errorf("condition names %q, which is not a search", name)
	}
	if len(s.Keywords) > 0 {
		return "", fmt.Errorf("search %s: keyword searches match the raw log line, which access events do not keep", name)
	}
	var ors []string
	for _, m := range s.EventMatchers {
		var ands []string
		for _, fm := range m {
			e, err := matcher(fm)
			if err != nil {
				return "", fmt.Errorf("search %s: %w", name, err)
			}
			ands = append(ands, e)
		}
		if len(ands) == 0 {
			return "", fmt.Errorf("search %s is empty", name)
		}
		ors = append(ors, join("&&", ands))
	}
	e := join("||", ors)
	c.done[name] = e
	return e, nil
}

// matcher converts FIELD|modifiers: values (a list is OR'ed, or AND'ed with |all).
func matcher(fm sigmago.FieldMatcher) (string, error) {
	f, err := lookup(fm.Field)
	if err != nil {
		return "", err
	}
	mode, all := "", false
	for _, m := range fm.Modifiers {
		switch strings.ToLower(m) {
		case "contains", "startswith", "endswith", "re":
			if mode != "" {
				return "", fmt.Errorf("field %s: modifiers %s and %s together", fm.Field, mode, m)
			}
			mode = strings.ToLower(m)
		case "all":
			all = true
		default:
			return "", fmt.Errorf("field %s: modifier |%s is not supported (contains, startswith, endswith, re, all are)", fm.Field, m)
		}
	}
	if len(fm.Values) == 0 {
		return "", fmt.Errorf("field %s has no value", fm.Field)
	}
	var parts []string
	for _, v := range fm.Values {
		p, err := value(f, fm.Field, mode, v)
		if err != nil {
			return "", err
		}
		parts = append(parts, p)
	}
	if all {
		return join("&&", parts), nil
	}
	return join("||", parts), nil
}

func value(f field, name, mode string, v any) (string, error) {
	if v == nil {
		if f.kind == kInt {
			return f.name + " == 0", nil
		}
		return f.name + ` == ""`, nil
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case int:
		s = strconv.Itoa(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		s = strconv.FormatBool(x)
	default:
		return "", fmt.Errorf("field %s: value of type %T", name, v)
	}
	if f.kind == kInt {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || mode != "" {
			return "", fmt.Errorf("field %s is a number: only exact integer values (%q)", name, s)
		}
		return fmt.Sprintf("%s == %d", f.name, n), nil
	}
	var re string
	switch mode {
	case "re":
		if _, err := regexp.Compile(s); err != nil {
			return "", fmt.Errorf("field %s: |re %q is not RE2: %v", name, s, err)
		}
		re = s
	case "contains":
		re = "(?i)" + glob(s)
	case "startswith":
		re = "(?i)^" + glob(s)
	case "endswith":
		re = "(?i)" + glob(s) + "$"
	default:
		re = "(?i)^" + glob(s) + "$"
	}
	return fmt.Sprintf("%s.matches(%s)", f.name, strconv.Quote(re)), nil
}

// glob turns a Sigma value (with * and ? wildcards, \ escaping them) into a
// regular expression.
func glob(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && strings.IndexByte(`*?\`, s[i+1]) >= 0:
			b.WriteString(regexp.QuoteMeta(s[i+1 : i+2]))
			i++
		case c == '*':
			b.WriteString(".*")
		case c == '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(s[i : i+1]))
		}
	}
	return b.String()
}

// ruleOut is a rule as written to a rules file.
type ruleOut struct {
	Name      string          `yaml:"name"`
	Severity  detect.Severity `yaml:"severity"`
	Expr      string          `yaml:"expr"`
	Threshold uint32          `yaml:"threshold,omitempty"`
	Window    string          `yaml:"window,omitempty"`
	GroupBy   string          `yaml:"group_by,omitempty"`
}

// File returns a custos rules file holding rules.
func File(rules []detect.Rule) ([]byte, error) {
	var doc struct {
		Rules []ruleOut `yaml:"rules"`
	}
	for _, r := range rules {
		o := ruleOut{Name: r.Name, Severity: r.Severity, Expr: r.Expr, Threshold: r.Threshold, GroupBy: r.GroupBy}
		if r.Window > 0 {
			o.Window = r.Window.String()
		}
		doc.Rules = append(doc.Rules, o)
	}
	return yaml.Marshal(doc)
}
