package server_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/custos-dev/custos/server"
)

// routerPatterns reads the patterns the authority's router registers from
// the source of the packages that build it (server, authority): every
// mux.Handle/HandleFunc call with a literal pattern, outside the functions
// that build other processes' routers.
func routerPatterns(t *testing.T) []string {
	t.Helper()
	other := map[string]bool{"RunRole": true, "RunGateway": true, "serveAdmin": true}
	var out []string
	for _, dir := range []string{".", "../authority"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range af.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil || other[fd.Name.Name] {
					continue
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					c, ok := n.(*ast.CallExpr)
					if !ok || len(c.Args) != 2 {
						return true
					}
					sel, ok := c.Fun.(*ast.SelectorExpr)
					if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
						return true
					}
					if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "mux" {
						return true
					}
					if lit, ok := c.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						p, _ := strconv.Unquote(lit.Value)
						out = append(out, p)
					}
					return true
				})
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d routes in the source: %v", len(out), out)
	}
	return out
}

type operation struct {
	method, path string
	op           *v3.Operation
}

func operations(doc *v3.Document) []operation {
	var ops []operation
	for path, item := range doc.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			ops = append(ops, operation{strings.ToUpper(method), path, op})
		}
	}
	return ops
}

// example fills a path's parameters with their examples (or "x").
func examplePath(o operation, item *v3.PathItem) string {
	p := o.path
	params := append([]*v3.Parameter{}, item.Parameters...)
	params = append(params, o.op.Parameters...)
	for _, prm := range params {
		if prm.In != "path" {
			continue
		}
		v := "x"
		if prm.Example != nil && prm.Example.Value != "" {
			v = prm.Example.Value
		}
		p = strings.ReplaceAll(p, "{"+prm.Name+"}", url.PathEscape(v))
	}
	return p
}

// The authority serves GET /openapi.json, an OpenAPI 3.1 document that is
// valid, lists exactly the operations its router serves, and whose example
// requests validate against it (while a wrong request does not); a real
// issuance answer validates too.
func TestOpenAPIMatchesRouter(t *testing.T) {
	e := start(t)
	resp, err := http.Get(e.APIURL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ldoc, err := libopenapi.NewDocument(body)
	if err != nil {
		t.Fatal(err)
	}
	if v := ldoc.GetVersion(); v != "3.1.0" {
		t.Fatalf("OpenAPI version %q, want 3.1.0", v)
	}
	model, err := ldoc.BuildV3Model()
	if err != nil {
		t.Fatalf("document model: %v", err)
	}
	val, errs := validator.NewValidator(ldoc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := val.ValidateDocument(); !ok {
		for _, ve := range verrs {
			for _, f := range ve.SchemaValidationErrors {
				t.Errorf("document: %+v", *f)
			}
			t.Errorf("document: %s: %s", ve.Message, ve.Reason)
		}
	}
	doc := &model.Model
	mux := server.MuxOf(e.S)

	// Router → document.
	documented := map[string]bool{}
	for _, o := range operations(doc) {
		documented[o.method+" "+o.path] = true
	}
	for _, p := range routerPatterns(t) {
		method, path, ok := strings.Cut(p, " ")
		if !ok { // a method-less prefix mounts a sub-API
			found := false
			for k := range documented {
				_, dp, _ := strings.Cut(k, " ")
				found = found || strings.HasPrefix(dp, p)
			}
			if !found {
				t.Errorf("router mounts %s; the document lists nothing under it", p)
			}
			continue
		}
		if !documented[method+" "+path] {
			t.Errorf("router serves %s; the document does not list it", p)
		}
	}

	// Document → router: each operation reaches the pattern it names.
	var ops []string
	for _, o := range operations(doc) {
		item := doc.Paths.PathItems.GetOrZero(o.path)
		req, _ := http.NewRequest(o.method, "http://x"+examplePath(o, item), nil)
		_, pattern := mux.Handler(req)
		want := o.method + " " + o.path
		switch {
		case pattern == want:
		case strings.HasSuffix(pattern, "/") && !strings.Contains(pattern, " ") && strings.HasPrefix(o.path, pattern):
		default:
			t.Errorf("document lists %s; the router answers it with %q", want, pattern)
		}
		ops = append(ops, want)
	}
	sort.Strings(ops)
	t.Logf("%d operations", len(ops))

	// Example requests validate; their wrong twins do not.
	validated := 0
	for _, o := range operations(doc) {
		if o.op.RequestBody == nil {
			continue
		}
		item := doc.Paths.PathItems.GetOrZero(o.path)
		for ct, mt := range o.op.RequestBody.Content.FromOldest() {
			if mt.Example == nil || ct == "application/x-ndjson" { // JSON lines: the validator reads one JSON value
				continue
			}
			var ex any
			if err := mt.Example.Decode(&ex); err != nil {
				t.Fatal(err)
			}
			var b []byte
			switch {
			case ct == "application/x-www-form-urlencoded":
				q := url.Values{}
				for k, v := range ex.(map[string]any) {
					q.Set(k, v.(string))
				}
				b = []byte(q.Encode())
			case strings.HasSuffix(ct, "json") && !strings.Contains(ct, "ndjson"):
				b, _ = json.Marshal(ex)
			default:
				b = []byte(ex.(string))
			}
			req, _ := http.NewRequest(o.method, "http://127.0.0.1:7700"+examplePath(o, item), bytes.NewReader(b))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Authorization", "Bearer example")
			if ok, verrs := val.ValidateHttpRequest(req); !ok {
				for _, ve := range verrs {
					t.Errorf("example %s %s (%s): %s: %s", o.method, o.path, ct, ve.Message, ve.Reason)
				}
			}
			validated++
		}
	}
	if validated < 10 {
		t.Errorf("only %d example requests", validated)
	}
	for _, bad := range []string{`{"subjekt":"1"}`, `{"audience":"shop-api"}`, `{"subject":1}`, `{"subject":"1","ttl":-5}`} {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:7700/v1/tokens", strings.NewReader(bad))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer example")
		if ok, _ := val.ValidateHttpRequest(req); ok {
			t.Errorf("wrong issuance request %s validates", bad)
		}
	}

	// A real issuance, request and answer, against the document.
	secret := e.Client(t)
	req, _ := http.NewRequest("POST", e.APIURL+"/v1/tokens", strings.NewReader(`{"subject":"`+e.Member(1)+`","audience":"shop-api","ttl":60}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	if ok, verrs := val.ValidateHttpRequest(req); !ok {
		t.Fatalf("issuance request: %v", verrs[0].Message)
	}
	req, _ = http.NewRequest("POST", e.APIURL+"/v1/tokens", strings.NewReader(`{"subject":"`+e.Member(1)+`","audience":"shop-api","ttl":60}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	ans, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer ans.Body.Close()
	if ans.StatusCode != 200 {
		t.Fatalf("issuance: %d", ans.StatusCode)
	}
	if ok, verrs := val.ValidateHttpResponse(req, ans); !ok {
		for _, ve := range verrs {
			t.Errorf("issuance answer: %s: %s", ve.Message, ve.Reason)
		}
	}
}
