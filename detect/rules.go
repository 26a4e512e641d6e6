package detect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"gopkg.in/yaml.v3"

	"github.com/custos-dev/custos/event"
)

// ErrInvalidRules wraps every rules-file error; each names file:line:column.
var ErrInvalidRules = errors.New("invalid rules")

// Rule is one custom rule as written in a rules file:
//
//	rules:
//	  - name: address_book_abroad
//	    severity: high
//	    expr: route == "/v1/members/{id}/addresses" && country != "KR"
//	    threshold: 100      # matches per group within window; 0 or 1: every match
//	    window: 10m
//	    group_by: src_ip    # an event field, or "network" (the /24)
//	    contain: {action: block_source, dry_run: true, for: 1h}
//
// Expressions see the event's fields: time (timestamp), gateway, request_id,
// method, route, path, status, bytes, latency_us, src_ip, country, asn,
// user_agent, token.jti, token.kid, token.sub, token.aud, token.iat,
// token.exp, verdict, reason, subject, data_classes (list of strings), and
// reported ("log" when the event was read from a log, whose reason is then
// a claim custos did not check; "" when a custos gateway checked it).
type Rule struct {
	Name      string         `yaml:"name" json:"name"`
	Severity  Severity       `yaml:"severity" json:"severity"`
	Expr      string         `yaml:"expr" json:"expr"`
	Threshold uint32         `yaml:"threshold" json:"threshold,omitempty"`
	Window    time.Duration  `yaml:"window" json:"window,omitempty"`
	GroupBy   string         `yaml:"group_by" json:"group_by,omitempty"`
	Contain   *ContainPolicy `yaml:"contain" json:"contain,omitempty"`
}

// Variable indexes of the activation cache.
const (
	vTime = iota
	vGateway
	vRequestID
	vMethod
	vRoute
	vPath
	vStatus
	vBytes
	vLatency
	vSrcIP
	vCountry
	vASN
	vUserAgent
	vJTI
	vKID
	vSub
	vAud
	vIAT
	vEXP
	vVerdict
	vReason
	vSubject
	vDataClasses
	vReported
	numVars
)

var varNames = map[string]int{
	"time": vTime, "gateway": vGateway, "request_id": vRequestID, "method": vMethod, "route": vRoute,
	"path": vPath, "status": vStatus, "bytes": vBytes, "latency_us": vLatency, "src_ip": vSrcIP,
	"country": vCountry, "asn": vASN, "user_agent": vUserAgent, "token.jti": vJTI, "token.kid": vKID,
	"token.sub": vSub, "token.aud": vAud, "token.iat": vIAT, "token.exp": vEXP, "verdict": vVerdict,
	"reason": vReason, "subject": vSubject, "data_classes": vDataClasses,
	"reported": vReported,
}

var (
	envOnce sync.Once
	celEnv  *cel.Env
	envErr  error
)

func ruleEnv() (*cel.Env, error) {
	envOnce.Do(func() {
		var opts []cel.EnvOption
		for name, i := range varNames {
			t := cel.StringType
			switch i {
			case vTime:
				t = cel.TimestampType
			case vStatus, vBytes, vLatency, vASN, vIAT, vEXP:
				t = cel.IntType
			case vDataClasses:
				t = cel.ListType(cel.StringType)
			}
			opts = append(opts, cel.Variable(name, t))
		}
		celEnv, envErr = cel.NewEnv(opts...)
	})
	return celEnv, envErr
}

// activation resolves variables from the current event, boxing each at most
// once per event.
type activation struct {
	ev    *event.Access
	have  uint32
	cache [numVars]ref.Val
}

func (a *activation) reset(ev *event.Access) { a.ev, a.have = ev, 0 }

func (a *activation) ResolveName(name string) (any, bool) {
	i, ok := varNames[name]
	if !ok {
		return nil, false
	}
	if a.have&(1<<i) != 0 {
		return a.cache[i], true
	}
	ev := a.ev
	var v ref.Val
	switch i {
	case vTime:
		v = types.Timestamp{Time: ev.Time}
	case vGateway:
		v = types.String(ev.Gateway)
	case vRequestID:
		v = types.String(ev.RequestID)
	case vMethod:
		v = types.String(ev.Method)
	case vRoute:
		v = types.String(ev.Route)
	case vPath:
		v = types.String(ev.Path)
	case vStatus:
		v = types.Int(ev.Status)
	case vBytes:
		v = types.Int(ev.Bytes)
	case vLatency:
		v = types.Int(ev.LatencyUS)
	case vSrcIP:
		v = types.String(ev.SrcIP)
	case vCountry:
		v = types.String(ev.Country)
	case vASN:
		v = types.Int(ev.ASN)
	case vUserAgent:
		v = types.String(ev.UserAgent)
	case vJTI:
		v = types.String(ev.Token.JTI)
	case vKID:
		v = types.String(ev.Token.KID)
	case vSub:
		v = types.String(ev.Token.Sub)
	case vAud:
		v = types.String(ev.Token.Aud)
	case vIAT:
		v = types.Int(ev.Token.IAT)
	case vEXP:
		v = types.Int(ev.Token.EXP)
	case vVerdict:
		v = types.String(ev.Verdict)
	case vReason:
		v = types.String(ev.Reason)
	case vSubject:
		v = types.String(ev.Subject)
	case vDataClasses:
		v = types.NewStringList(types.DefaultTypeAdapter, ev.DataClasses)
	case vReported:
		v = types.String(ev.Reported)
	}
	a.cache[i] = v
	a.have |= 1 << i
	return v, true
}

func (a *activation) Parent() interpreter.Activation { return nil }

var _ interpreter.Activation = (*activation)(nil)

// groupValue returns the group_by field of ev.
func groupValue(field string, ev *event.Access) string {
	switch field {
	case "":
		return ""
	case "network":
		if ip, err := netip.ParseAddr(ev.SrcIP); err == nil {
			return netOf(ip).String()
		}
		return ev.SrcIP
	case "asn":
		return strconv.FormatUint(uint64(ev.ASN), 10)
	case "status":
		return strconv.Itoa(ev.Status)
	}
	var a activation
	a.reset(ev)
	if v, ok := a.ResolveName(field); ok {
		if s, ok := v.(types.String); ok {
			return string(s)
		}
		return fmt.Sprint(v.(ref.Val).Value())
	}
	return ""
}

var groupable = map[string]bool{"network": true}

func init() {
	for n, i := range varNames {
		if i != vTime && i != vDataClasses {
			groupable[n] = true
		}
	}
}

type compiled struct {
	Rule
	prg     cel.Program
	native  boolFn // nil: the expression runs in CEL
	guard   guard  // of native
	gkey    func(seed maphash.Seed, ev *event.Access, p *prep) uint64
	gval    func(ev *event.Access) string
	said    string // summary of a match of a rule without threshold
	ord     uint32 // position among the checks of an event; see fireRec
	contain *ContainPolicy
	groups  [numShards]*genMap[windowCount]
	matches [numShards]paddedCount
}

// paddedCount is one shard's counter, alone on its cache line.
type paddedCount struct {
	n int64
	_ [56]byte
}

// matchCount returns how many events the rule matched. Call it with no
// batch in flight.
func (c *compiled) matchCount() int64 {
	var n int64
	for i := range c.matches {
		n += c.matches[i].n
	}
	return n
}

// groupKey returns how a rule's group_by field is hashed to its window key.
func groupKey(field string) func(maphash.Seed, *event.Access, *prep) uint64 {
	switch field {
	case "":
		return func(maphash.Seed, *event.Access, *prep) uint64 { return 1 }
	case "network":
		return func(seed maphash.Seed, ev *event.Access, p *prep) uint64 {
			if p.hasIP {
				return p.netKey
			}
			return p.ipHash
		}
	case "src_ip":
		return func(_ maphash.Seed, _ *event.Access, p *prep) uint64 { return p.ipHash }
	}
	if f, ok := strFields[field]; ok {
		return func(seed maphash.Seed, ev *event.Access, _ *prep) uint64 { return maphash.String(seed, f(ev)) }
	}
	if f, ok := intFields[field]; ok {
		return func(_ maphash.Seed, ev *event.Access, _ *prep) uint64 { return mix(uint64(f(ev))) }
	}
	return nil
}

func (c *compiled) sameShape(o *compiled) bool {
	return c.Name == o.Name && c.Expr == o.Expr && c.Window == o.Window && c.GroupBy == o.GroupBy && c.Threshold == o.Threshold
}

type ruleSet struct {
	source  string
	rules   []*compiled
	counted []*compiled // the rules with a threshold, in order
}

func (rs *ruleSet) byName(name string) *compiled {
	for _, r := range rs.rules {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// eval runs the rules over ev for shard sh: rules that count per group run
// in the shard owning the group's key, the others in the event's shard.
func (rs *ruleSet) eval(b *builtins, sh *shard, ev *event.Access, p *prep) {
	if len(rs.rules) == 0 {
		return
	}
	list := rs.counted // the event's rules without a threshold run elsewhere
	if ownerOf(p.own) == sh.id {
		list = rs.rules
	}
	for _, r := range list {
		sh.ord = r.ord
		var gk uint64
		if r.Threshold > 1 {
			gk = r.gkey(b.seed, ev, p)
			if ownerOf(gk) != sh.id {
				continue
			}
		}
		if r.native != nil {
			if r.guard.fails(ev) || !r.native(ev) {
				continue
			}
		} else {
			sh.act.reset(ev)
			out, _, err := r.prg.Eval(&sh.act)
			sh.act.ev = nil
			if err != nil || out != types.True {
				continue
			}
		}
		r.matches[sh.id].n++
		kind, val := "rule", r.Name
		if r.GroupBy != "" {
			kind, val = r.GroupBy, r.gval(ev)
		}
		if r.Threshold <= 1 {
			sh.fire(r.Name, r.Severity, kind, val, "", r.said, 1)
			continue
		}
		w := r.groups[sh.id].get(gk)
		n := w.add(p.t, int64(r.Window), 1)
		if n >= r.Threshold {
			// The summary is written only if the match raises a new alert.
			sh.fires = append(sh.fires, fireRec{idx: sh.idx, ord: sh.ord, k: sh.key(r.Name, kind, val, ""), rule: r.Name, sev: r.Severity, kind: kind, val: val, n: 1, r: r, cnt: n})
		}
	}
}

var ruleName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// maxRules bounds a rules file.
const maxRules = 1000

// CheckRules parses and compiles a rules file without loading it; name is
// used in error positions. Every problem is reported, each as
// name:line:column, wrapped in ErrInvalidRules.
func CheckRules(name string, r io.Reader) ([]Rule, error) {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("failed to read rules: %w", err)
	}
	rs, err := parseRules(name, data, 1)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, c := range rs.rules {
		out = append(out, c.Rule)
	}
	return out, nil
}

// parseRules parses and compiles a rules file named name.
func parseRules(name string, data []byte, maxKeys int) (*ruleSet, error) {
	env, err := ruleEnv()
	if err != nil {
		return nil, fmt.Errorf("failed to build the rule environment: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidRules, name, err)
	}
	rs := &ruleSet{source: name}
	lines := bytes.Split(data, []byte("\n"))
	if len(doc.Content) == 0 {
		return rs, nil
	}
	var errs []error
	bad := func(line, col int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s:%d:%d: %s", ErrInvalidRules, name, line, col, fmt.Sprintf(format, a...)))
	}
	root := doc.Content[0]
	var list *yaml.Node
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			k := root.Content[i]
			if k.Value == "rules" {
				list = root.Content[i+1]
			} else {
				bad(k.Line, k.Column, "unknown key %q (want rules)", k.Value)
			}
		}
	} else if root.Kind == yaml.SequenceNode {
		list = root
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		bad(root.Line, root.Column, "want a list of rules under \"rules\"")
		return nil, errors.Join(errs...)
	}
	if len(list.Content) > maxRules {
		bad(list.Line, list.Column, "too many rules (%d, at most %d)", len(list.Content), maxRules)
		return nil, errors.Join(errs...)
	}
	seen := map[string]bool{}
	for _, n := range list.Content {
		if n.Kind != yaml.MappingNode {
			bad(n.Line, n.Column, "a rule must be a mapping")
			continue
		}
		pos := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			switch k.Value {
			case "name", "severity", "expr", "threshold", "window", "group_by", "contain":
				pos[k.Value] = n.Content[i+1]
			default:
				bad(k.Line, k.Column, "unknown field %q", k.Value)
			}
		}
		var r Rule
		if err := n.Decode(&r); err != nil {
			bad(n.Line, n.Column, "%v", err)
			continue
		}
		at := func(f string) (int, int) {
			if p := pos[f]; p != nil {
				return p.Line, p.Column
			}
			return n.Line, n.Column
		}
		if !ruleName.MatchString(r.Name) {
			l, c := at("name")
			bad(l, c, "rule name %q must match %s", r.Name, ruleName)
		} else if seen[r.Name] {
			l, c := at("name")
			bad(l, c, "duplicate rule name %q", r.Name)
		}
		seen[r.Name] = true
		if r.Severity == "" {
			r.Severity = Medium
		}
		if !r.Severity.valid() {
			l, c := at("severity")
			bad(l, c, "rule %s: unknown severity %q", r.Name, r.Severity)
		}
		if r.Threshold > 1 && r.Window <= 0 {
			l, c := at("threshold")
			bad(l, c, "rule %s: a threshold needs a positive window", r.Name)
		}
		if r.Window < 0 {
			l, c := at("window")
			bad(l, c, "rule %s: negative window", r.Name)
		}
		if r.GroupBy != "" && !groupable[r.GroupBy] {
			l, c := at("group_by")
			bad(l, c, "rule %s: cannot group by %q", r.Name, r.GroupBy)
		}
		if r.Contain != nil {
			if err := r.Contain.validate(); err != nil {
				l, c := at("contain")
				bad(l, c, "rule %s: containment: %v", r.Name, err)
			}
		}
		if r.Expr == "" {
			l, c := at("expr")
			bad(l, c, "rule %s: empty expr", r.Name)
			continue
		}
		ast, iss := env.Compile(r.Expr)
		if iss != nil && iss.Err() != nil {
			en := pos["expr"]
			for _, ce := range iss.Errors() {
				l, c := exprPos(en, lines, ce.Location.Line(), ce.Location.Column())
				bad(l, c, "rule %s: %s", r.Name, ce.Message)
			}
			continue
		}
		if ast.OutputType() != cel.BoolType {
			l, c := at("expr")
			bad(l, c, "rule %s: expr must be a bool, is %s", r.Name, ast.OutputType())
			continue
		}
		prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			l, c := at("expr")
			bad(l, c, "rule %s: %v", r.Name, err)
			continue
		}
		cr := &compiled{Rule: r, prg: prg, native: nativeOf(ast), gkey: groupKey(r.GroupBy), contain: r.Contain,
			said: "rule " + r.Name + " matched"}
		gf := r.GroupBy
		if cr.native != nil {
			cr.guard = guardOf(ast.NativeRep().Expr())
		}
		cr.gval = func(ev *event.Access) string { return groupValue(gf, ev) }
		if f, ok := strFields[gf]; ok {
			cr.gval = f
		}
		cr.ord = 100 + uint32(len(rs.rules))
		if r.Threshold > 1 {
			for i := range cr.groups {
				cr.groups[i] = newGenMap[windowCount](perShard(maxKeys))
			}
			rs.counted = append(rs.counted, cr)
		}
		rs.rules = append(rs.rules, cr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rs, nil
}

// exprPos maps a CEL issue position (1-based line, 0-based column within the
// expression) to the file.
func exprPos(n *yaml.Node, lines [][]byte, line, col int) (int, int) {
	if n == nil {
		return 0, 0
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// The expression starts on the line after the indicator; its
		// lines share the block's indentation.
		indent := 0
		if n.Line < len(lines) {
			l := lines[n.Line] // the first content line (n.Line is 1-based)
			for indent < len(l) && l[indent] == ' ' {
				indent++
			}
		}
		return n.Line + line, indent + col + 1
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line <= 1 {
			return n.Line, n.Column + 1 + col
		}
	default:
		if line <= 1 {
			return n.Line, n.Column + col
		}
	}
	return n.Line + line - 1, col + 1 // continuation lines of a flow scalar
}

// LoadRules reads the rules file at path and swaps it in atomically; rules
// that keep their name, expression, threshold, window and grouping keep
// their counts. On error the running rules stay.
func (e *Engine) LoadRules(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read rules: %w", err)
	}
	return e.loadRules(path, data)
}

// LoadRulesFrom is LoadRules for a reader; name is used in error positions.
func (e *Engine) LoadRulesFrom(name string, r io.Reader) error {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return fmt.Errorf("failed to read rules: %w", err)
	}
	return e.loadRules(name, data)
}

func (e *Engine) loadRules(name string, data []byte) error {
	rs, err := parseRules(name, data, e.cfg.MaxKeys)
	if err != nil {
		return err
	}
	e.mu.Lock()
	old := e.rules.Load()
	for _, r := range rs.rules {
		if o := old.byName(r.Name); o != nil && o.sameShape(r) {
			r.groups, r.matches = o.groups, o.matches
		}
	}
	e.rules.Store(rs)
	e.mu.Unlock()
	return nil
}

// Rules returns the rules in force.
func (e *Engine) Rules() []Rule {
	var out []Rule
	for _, r := range e.rules.Load().rules {
		out = append(out, r.Rule)
	}
	return out
}

// WatchRules reloads path whenever its content changes, checking every
// interval, until ctx is done. Load errors go to onErr (if not nil) and
// leave the running rules in place.
func (e *Engine) WatchRules(ctx context.Context, path string, interval time.Duration, onErr func(error)) {
	var last []byte
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(path)
		if err == nil && !bytes.Equal(data, last) {
			last = data
			err = e.loadRules(path, data)
		}
		if err != nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
