package detect

import (
	"regexp"
	"strings"
	"unicode/utf8"

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

func compileCompare(fn string, l, r celast.Expr) (boolFn, bool) {
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
		switch fn {
		case "_==_":
			return func(ev *event.Access) bool { return a(ev) == b(ev) }, true
		case "_!=_":
			return func(ev *event.Access) bool { return a(ev) != b(ev) }, true
		case "_<_":
			return func(ev *event.Access) bool { return a(ev) < b(ev) }, true
		case "_<=_":
			return func(ev *event.Access) bool { return a(ev) <= b(ev) }, true
		case "_>_":
			return func(ev *event.Access) bool { return a(ev) > b(ev) }, true
		}
		return func(ev *event.Access) bool { return a(ev) >= b(ev) }, true
	}
	if a, ok := compileInt(l); ok {
		b, ok := compileInt(r)
		if !ok {
			return nil, false
		}
		switch fn {
		case "_==_":
			return func(ev *event.Access) bool { return a(ev) == b(ev) }, true
		case "_!=_":
			return func(ev *event.Access) bool { return a(ev) != b(ev) }, true
		case "_<_":
			return func(ev *event.Access) bool { return a(ev) < b(ev) }, true
		case "_<=_":
			return func(ev *event.Access) bool { return a(ev) <= b(ev) }, true
		case "_>_":
			return func(ev *event.Access) bool { return a(ev) > b(ev) }, true
		}
		return func(ev *event.Access) bool { return a(ev) >= b(ev) }, true
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
