package detect

import (
	"cmp"
	"math"
	"regexp"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"

	"github.com/custos-dev/custos/event"
)

// A rule's checked CEL expression is turned into plain Go functions over the
// event when every part of it belongs to a subset that cannot fail at run
// time: literals, fields (but time), comparisons of strings, ints and bools,
// &&, ||, !, ?:, in, size, startsWith, endsWith, contains and matches with a
// literal pattern. Within that subset the result equals the CEL program's
// (TestNativeMatchesCEL checks it); any other expression runs in CEL.
//
// A comparison of a field with a literal (the commonest part of a rule)
// reads the field at its offset in event.Access, so that it is one closure
// with no call inside: a chain of closures calling field getters cost more
// than the comparisons themselves. The offsets come from unsafe.Offsetof,
// checked by the compiler against the struct.

type (
	boolFn = func(*event.Access) bool
	strFn  = func(*event.Access) string
	intFn  = func(*event.Access) int64
	listFn = func(*event.Access) []string
)

// nativeOf returns the native form of a checked expression, or nil.
func nativeOf(ast *cel.Ast) boolFn {
	f, _ := compileBool(ast.NativeRep().Expr())
	return f
}

// guard is a necessary condition of a native rule, checked before the
// rule's closures run: the first comparison of a field with a literal among
// the operands of its top-level &&. Most events fail a rule's guard, and the
// check is a load and a comparison.
type guard struct {
	kind   uint8 // 0: none, 1: string field, 2: integer field
	neg    bool  // the field must not equal s (not be within [lo, hi])
	off    uintptr
	s      string
	f      intField
	lo, hi int64
}

// fails reports whether ev fails the guard, and so the rule.
func (g *guard) fails(ev *event.Access) bool {
	switch g.kind {
	case 1:
		return (strAt(ev, g.off) == g.s) == g.neg
	case 2:
		v := intAt(ev, g.f)
		return (v >= g.lo && v <= g.hi) == g.neg
	}
	return false
}

// guardOf returns the guard of a checked expression of the native subset.
func guardOf(e celast.Expr) guard {
	fn, args, ok := call(e)
	if !ok {
		return guard{}
	}
	if fn == "_&&_" && len(args) == 2 {
		if g := guardOf(args[0]); g.kind != 0 {
			return g
		}
		return guardOf(args[1])
	}
	if len(args) != 2 || !isCompare(fn) {
		return guard{}
	}
	field, litExpr, flipped, ok := fieldAndLiteral(args[0], args[1])
	if !ok {
		return guard{}
	}
	if off, ok := strOffsets[field]; ok && (fn == "_==_" || fn == "_!=_") {
		lit, ok := litExpr.AsLiteral().(types.String)
		if !ok {
			return guard{}
		}
		return guard{kind: 1, off: off, s: string(lit), neg: fn == "_!=_"}
	}
	f, ok := intOffsets[field]
	lit, isInt := litExpr.AsLiteral().(types.Int)
	if !ok || !isInt {
		return guard{}
	}
	n := int64(lit)
	if flipped {
		fn = flip(fn)
	}
	g := guard{kind: 2, f: f, lo: math.MinInt64, hi: math.MaxInt64}
	switch fn {
	case "_==_":
		g.lo, g.hi = n, n
	case "_!=_":
		g.lo, g.hi, g.neg = n, n, true
	case "_<_":
		if n == math.MinInt64 {
			return guard{}
		}
		g.hi = n - 1
	case "_<=_":
		g.hi = n
	case "_>_":
		if n == math.MaxInt64 {
			return guard{}
		}
		g.lo = n + 1
	case "_>=_":
		g.lo = n
	}
	return g
}

// flip returns op' such that (a op b) == (b op' a).
func flip(fn string) string {
	switch fn {
	case "_<_":
		return "_>_"
	case "_<=_":
		return "_>=_"
	case "_>_":
		return "_<_"
	case "_>=_":
		return "_<=_"
	}
	return fn
}

func call(e celast.Expr) (string, []celast.Expr, bool) {
	if e.Kind() != celast.CallKind {
		return "", nil, false
	}
	c := e.AsCall()
	args := c.Args()
	if c.IsMemberFunction() {
		args = append([]celast.Expr{c.Target()}, args...)
	}
	return c.FunctionName(), args, true
}

func compileBool(e celast.Expr) (boolFn, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		if b, ok := e.AsLiteral().(types.Bool); ok {
			v := bool(b)
			return func(*event.Access) bool { return v }, true
		}
		return nil, false
	case celast.IdentKind:
		return nil, false // no bool fields
	}
	fn, args, ok := call(e)
	if !ok {
		return nil, false
	}
	switch {
	case (fn == "_&&_" || fn == "_||_") && len(args) == 2:
		a, ok1 := compileBool(args[0])
		b, ok2 := compileBool(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		if fn == "_&&_" {
			return func(ev *event.Access) bool { return a(ev) && b(ev) }, true
		}
		return func(ev *event.Access) bool { return a(ev) || b(ev) }, true
	case fn == "!_" && len(args) == 1:
		a, ok := compileBool(args[0])
		if !ok {
			return nil, false
		}
		return func(ev *event.Access) bool { return !a(ev) }, true
	case fn == "_?_:_" && len(args) == 3:
		c, ok1 := compileBool(args[0])
		a, ok2 := compileBool(args[1])
		b, ok3 := compileBool(args[2])
		if !ok1 || !ok2 || !ok3 {
			return nil, false
		}
		return func(ev *event.Access) bool {
			if c(ev) {
				return a(ev)
			}
			return b(ev)
		}, true
	case len(args) == 2 && isCompare(fn):
		return compileCompare(fn, args[0], args[1])
	case fn == "@in" && len(args) == 2:
		return compileIn(args[0], args[1])
	case (fn == "startsWith" || fn == "endsWith" || fn == "contains") && len(args) == 2:
		if field, litExpr, flipped, ok := fieldAndLiteral(args[0], args[1]); ok && !flipped {
			off, ok1 := strOffsets[field]
			lit, ok2 := litExpr.AsLiteral().(types.String)
			if ok1 && ok2 {
				v := string(lit)
				switch fn {
				case "startsWith":
					return func(ev *event.Access) bool { return strings.HasPrefix(strAt(ev, off), v) }, true
				case "endsWith":
					return func(ev *event.Access) bool { return strings.HasSuffix(strAt(ev, off), v) }, true
				}
				return func(ev *event.Access) bool { return strings.Contains(strAt(ev, off), v) }, true
			}
		}
		s, ok1 := compileStr(args[0])
		x, ok2 := compileStr(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		switch fn {
		case "startsWith":
			return func(ev *event.Access) bool { return strings.HasPrefix(s(ev), x(ev)) }, true
		case "endsWith":
			return func(ev *event.Access) bool { return strings.HasSuffix(s(ev), x(ev)) }, true
		}
		return func(ev *event.Access) bool { return strings.Contains(s(ev), x(ev)) }, true
	case fn == "matches" && len(args) == 2:
		s, ok := compileStr(args[0])
		if !ok || args[1].Kind() != celast.LiteralKind {
			return nil, false
		}
		p, isStr := args[1].AsLiteral().(types.String)
		if !isStr {
			return nil, false
		}
		re, err := regexp.Compile(string(p))
		if err != nil {
			return nil, false // CEL reports the error at run time
		}
		return func(ev *event.Access) bool { return re.MatchString(s(ev)) }, true
	}
	return nil, false
}

func isCompare(fn string) bool {
	switch fn {
	case "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_":
		return true
	}
	return false
}

// strOffsets are the offsets of event.Access's string fields (Verdict and
// Reason are strings).
var strOffsets = map[string]uintptr{
	"gateway":    unsafe.Offsetof(event.Access{}.Gateway),
	"request_id": unsafe.Offsetof(event.Access{}.RequestID),
	"method":     unsafe.Offsetof(event.Access{}.Method),
	"route":      unsafe.Offsetof(event.Access{}.Route),
	"path":       unsafe.Offsetof(event.Access{}.Path),
	"src_ip":     unsafe.Offsetof(event.Access{}.SrcIP),
	"country":    unsafe.Offsetof(event.Access{}.Country),
	"user_agent": unsafe.Offsetof(event.Access{}.UserAgent),
	"token.jti":  unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.JTI),
	"token.kid":  unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.KID),
	"token.sub":  unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.Sub),
	"token.aud":  unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.Aud),
	"verdict":    unsafe.Offsetof(event.Access{}.Verdict),
	"reason":     unsafe.Offsetof(event.Access{}.Reason),
	"subject":    unsafe.Offsetof(event.Access{}.Subject),
	"reported":   unsafe.Offsetof(event.Access{}.Reported),
}

// intField is where an integer field of event.Access is and its type.
type intField struct {
	off  uintptr
	kind uint8 // 0: int64, 1: int, 2: uint32
}

var intOffsets = map[string]intField{
	"status":     {unsafe.Offsetof(event.Access{}.Status), 1},
	"bytes":      {unsafe.Offsetof(event.Access{}.Bytes), 0},
	"latency_us": {unsafe.Offsetof(event.Access{}.LatencyUS), 0},
	"asn":        {unsafe.Offsetof(event.Access{}.ASN), 2},
	"token.iat":  {unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.IAT), 0},
	"token.exp":  {unsafe.Offsetof(event.Access{}.Token) + unsafe.Offsetof(event.Token{}.EXP), 0},
}

// The fields are of the types strAt and intAt read: this does not compile
// otherwise.
var _ = func(a *event.Access) []any {
	return []any{
		[]*string{&a.Gateway, &a.RequestID, &a.Method, &a.Route, &a.Path, &a.SrcIP, &a.Country, &a.UserAgent,
			&a.Token.JTI, &a.Token.KID, &a.Token.Sub, &a.Token.Aud, (*string)(&a.Verdict), (*string)(&a.Reason), &a.Subject},
		[]*int64{&a.Bytes, &a.LatencyUS, &a.Token.IAT, &a.Token.EXP}, []*int{&a.Status}, []*uint32{&a.ASN},
	}
}

func strAt(ev *event.Access, off uintptr) string {
	return *(*string)(unsafe.Add(unsafe.Pointer(ev), off))
}

func intAt(ev *event.Access, f intField) int64 {
	p := unsafe.Add(unsafe.Pointer(ev), f.off)
	switch f.kind {
	case 1:
		return int64(*(*int)(p))
	case 2:
		return int64(*(*uint32)(p))
	}
	return *(*int64)(p)
}

// fieldAndLiteral returns the field and the literal of a comparison of
// the two, and whether the field is on the right.
func fieldAndLiteral(l, r celast.Expr) (field string, lit celast.Expr, flipped, ok bool) {
	switch {
	case l.Kind() == celast.IdentKind && r.Kind() == celast.LiteralKind:
		return l.AsIdent(), r, false, true
	case r.Kind() == celast.IdentKind && l.Kind() == celast.LiteralKind:
		return r.AsIdent(), l, true, true
	}
	return "", nil, false, false
}

// compileFieldCompare compiles a comparison of a field with a literal.
func compileFieldCompare(fn string, l, r celast.Expr) (boolFn, bool) {
	field, litExpr, flipped, ok := fieldAndLiteral(l, r)
	if !ok {
		return nil, false
	}
	if off, ok := strOffsets[field]; ok && (fn == "_==_" || fn == "_!=_") {
		lit, ok := litExpr.AsLiteral().(types.String)
		if !ok {
			return nil, false
		}
		v := string(lit)
		if fn == "_==_" {
			return func(ev *event.Access) bool { return strAt(ev, off) == v }, true
		}
		return func(ev *event.Access) bool { return strAt(ev, off) != v }, true
	}
	f, ok := intOffsets[field]
	if !ok {
		return nil, false
	}
	lit, ok := litExpr.AsLiteral().(types.Int)
	if !ok {
		return nil, false
	}
	v := int64(lit)
	if flipped { // lit op field is field op' lit
		fn = flip(fn)
	}
	switch fn {
	case "_==_":
		return func(ev *event.Access) bool { return intAt(ev, f) == v }, true
	case "_!=_":
		return func(ev *event.Access) bool { return intAt(ev, f) != v }, true
	case "_<_":
		return func(ev *event.Access) bool { return intAt(ev, f) < v }, true
	case "_<=_":
		return func(ev *event.Access) bool { return intAt(ev, f) <= v }, true
	case "_>_":
		return func(ev *event.Access) bool { return intAt(ev, f) > v }, true
	case "_>=_":
		return func(ev *event.Access) bool { return intAt(ev, f) >= v }, true
	}
	return nil, false
}

func compileCompare(fn string, l, r celast.Expr) (boolFn, bool) {
	if f, ok := compileFieldCompare(fn, l, r); ok {
		return f, true
	}
	if a, ok := compileStr(l); ok {
		b, ok := compileStr(r)
		if !ok {
			return nil, false
		}
		if r.Kind() == celast.LiteralKind && (fn == "_==_" || fn == "_!=_") {
			lit := b(nil)
			if fn == "_==_" {
				return func(ev *event.Access) bool { return a(ev) == lit }, true
			}
			return func(ev *event.Access) bool { return a(ev) != lit }, true
		}
		return compareFields(fn, a, b), true
	}
	if a, ok := compileInt(l); ok {
		b, ok := compileInt(r)
		if !ok {
			return nil, false
		}
		return compareFields(fn, a, b), true
	}
	if a, ok := compileBool(l); ok && (fn == "_==_" || fn == "_!=_") {
		b, ok := compileBool(r)
		if !ok {
			return nil, false
		}
		if fn == "_==_" {
			return func(ev *event.Access) bool { return a(ev) == b(ev) }, true
		}
		return func(ev *event.Access) bool { return a(ev) != b(ev) }, true
	}
	return nil, false
}

func compileIn(elem, list celast.Expr) (boolFn, bool) {
	if list.Kind() == celast.ListKind {
		l := list.AsList()
		if len(l.OptionalIndices()) > 0 {
			return nil, false
		}
		if s, ok := compileStr(elem); ok {
			return inList(s, l.Elements(), compileStr)
		}
		if n, ok := compileInt(elem); ok {
			return inList(n, l.Elements(), compileInt)
		}
		return nil, false
	}
	if elem.Kind() == celast.LiteralKind && list.Kind() == celast.IdentKind && list.AsIdent() == "data_classes" {
		if lit, ok := elem.AsLiteral().(types.String); ok {
			v := string(lit)
			return func(ev *event.Access) bool {
				for _, x := range ev.DataClasses {
					if x == v {
						return true
					}
				}
				return false
			}, true
		}
	}
	s, ok1 := compileStr(elem)
	lf, ok2 := compileList(list)
	if !ok1 || !ok2 {
		return nil, false
	}
	return func(ev *event.Access) bool {
		v := s(ev)
		for _, x := range lf(ev) {
			if x == v {
				return true
			}
		}
		return false
	}, true
}

func compileList(e celast.Expr) (listFn, bool) {
	if e.Kind() == celast.IdentKind && e.AsIdent() == "data_classes" {
		return func(ev *event.Access) []string { return ev.DataClasses }, true
	}
	return nil, false
}

var strFields = map[string]strFn{
	"gateway":    func(ev *event.Access) string { return ev.Gateway },
	"request_id": func(ev *event.Access) string { return ev.RequestID },
	"method":     func(ev *event.Access) string { return ev.Method },
	"route":      func(ev *event.Access) string { return ev.Route },
	"path":       func(ev *event.Access) string { return ev.Path },
	"src_ip":     func(ev *event.Access) string { return ev.SrcIP },
	"country":    func(ev *event.Access) string { return ev.Country },
	"user_agent": func(ev *event.Access) string { return ev.UserAgent },
	"token.jti":  func(ev *event.Access) string { return ev.Token.JTI },
	"token.kid":  func(ev *event.Access) string { return ev.Token.KID },
	"token.sub":  func(ev *event.Access) string { return ev.Token.Sub },
	"token.aud":  func(ev *event.Access) string { return ev.Token.Aud },
	"verdict":    func(ev *event.Access) string { return string(ev.Verdict) },
	"reason":     func(ev *event.Access) string { return string(ev.Reason) },
	"subject":    func(ev *event.Access) string { return ev.Subject },
	"reported":   func(ev *event.Access) string { return ev.Reported },
}

var intFields = map[string]intFn{
	"status":     func(ev *event.Access) int64 { return int64(ev.Status) },
	"bytes":      func(ev *event.Access) int64 { return ev.Bytes },
	"latency_us": func(ev *event.Access) int64 { return ev.LatencyUS },
	"asn":        func(ev *event.Access) int64 { return int64(ev.ASN) },
	"token.iat":  func(ev *event.Access) int64 { return ev.Token.IAT },
	"token.exp":  func(ev *event.Access) int64 { return ev.Token.EXP },
}

func compileStr(e celast.Expr) (strFn, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		if s, ok := e.AsLiteral().(types.String); ok {
			v := string(s)
			return func(*event.Access) string { return v }, true
		}
	case celast.IdentKind:
		f, ok := strFields[e.AsIdent()]
		return f, ok
	}
	return nil, false
}

func compileInt(e celast.Expr) (intFn, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		if n, ok := e.AsLiteral().(types.Int); ok {
			v := int64(n)
			return func(*event.Access) int64 { return v }, true
		}
	case celast.IdentKind:
		f, ok := intFields[e.AsIdent()]
		return f, ok
	case celast.CallKind:
		fn, args, _ := call(e)
		if fn != "size" || len(args) != 1 {
			return nil, false
		}
		if s, ok := compileStr(args[0]); ok {
			return func(ev *event.Access) int64 { return int64(utf8.RuneCountInString(s(ev))) }, true
		}
		if l, ok := compileList(args[0]); ok {
			return func(ev *event.Access) int64 { return int64(len(l(ev))) }, true
		}
	}
	return nil, false
}

// inList compiles `elem in [xs...]` for one element type: every list element
// must compile with the same compiler, or the rule stays on CEL.
func inList[T comparable](elem func(*event.Access) T, xs []celast.Expr, compile func(celast.Expr) (func(*event.Access) T, bool)) (func(*event.Access) bool, bool) {
	fs := make([]func(*event.Access) T, 0, len(xs))
	for _, x := range xs {
		f, ok := compile(x)
		if !ok {
			return nil, false
		}
		fs = append(fs, f)
	}
	return func(ev *event.Access) bool {
		v := elem(ev)
		for _, f := range fs {
			if f(ev) == v {
				return true
			}
		}
		return false
	}, true
}

// compareFields is the comparison fn ("_==_", "_<_", …, "_>=_") of two
// compiled operands.
func compareFields[T cmp.Ordered](fn string, a, b func(*event.Access) T) func(*event.Access) bool {
	switch fn {
	case "_==_":
		return func(ev *event.Access) bool { return a(ev) == b(ev) }
	case "_!=_":
		return func(ev *event.Access) bool { return a(ev) != b(ev) }
	case "_<_":
		return func(ev *event.Access) bool { return a(ev) < b(ev) }
	case "_<=_":
		return func(ev *event.Access) bool { return a(ev) <= b(ev) }
	case "_>_":
		return func(ev *event.Access) bool { return a(ev) > b(ev) }
	}
	return func(ev *event.Access) bool { return a(ev) >= b(ev) }
}
