package wire

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

type request struct {
	Subject string         `json:"subject"`
	Scope   []string       `json:"scope,omitempty"`
	Attrs   map[string]any `json:"attrs,omitempty"`
	Inner   *struct {
		Name string `json:"name"`
	} `json:"inner,omitempty"`
}

func TestUnmarshal(t *testing.T) {
	cases := map[string]struct {
		body string
		ok   bool
	}{
		"ok/plain":                 {`{"subject":"1020"}`, true},
		"ok/white space after":     {"{\"subject\":\"1020\"}\r\n\t ", true},
		"ok/nested":                {`{"subject":"1020","inner":{"name":"a"},"attrs":{"a":1,"b":[{"a":1},{"a":2}]}}`, true},
		"ok/same key in siblings":  {`{"attrs":{"x":{"k":1},"y":{"k":2}}}`, true},
		"ok/same key in parent":    {`{"subject":"1","attrs":{"subject":"2"}}`, true},
		"fail/duplicate":           {`{"subject":"1020","subject":"1021"}`, false},
		"fail/upper":               {`{"subject":"1020","SUBJECT":"1021"}`, false},
		"fail/upper first":         {`{"SUBJECT":"1021","subject":"1020"}`, false},
		"fail/mixed":               {`{"subject":"1020","SuBjEcT":"1021"}`, false},
		"fail/escaped":             {`{"subject":"1020","\u0073ubject":"1021"}`, false},
		"fail/escaped upper":       {`{"subject":"1020","\u0053UBJECT":"1021"}`, false},
		"fail/long s":              {"{\"subject\":\"1020\",\"\u017fubject\":\"1021\"}", false},
		"fail/kelvin":              {"{\"attrs\":{\"k\":1,\"\u212a\":2}}", false},
		"fail/nested duplicate":    {`{"inner":{"name":"a","NAME":"b"}}`, false},
		"fail/map duplicate":       {`{"attrs":{"a":1,"A":2}}`, false},
		"fail/deep duplicate":      {`{"attrs":{"b":[{"a":1},{"x":{"y":1,"Y":2}}]}}`, false},
		"fail/duplicate after obj": {`{"inner":{"name":"a"},"Inner":{"name":"b"}}`, false},
		"fail/unknown":             {`{"subject":"1020","admin":true}`, false},
		"fail/trailing object":     {`{"subject":"1020"}{"subject":"1021"}`, false},
		"fail/trailing garbage":    {`{"subject":"1020"} x`, false},
		"fail/trailing scalar":     {`{"subject":"1020"}1`, false},
		"fail/empty":               {``, false},
		"fail/space":               {"  ", false},
		"fail/truncated":           {`{"subject":"1020"`, false},
		"fail/not utf8":            {"{\"subject\":\"10\xff20\"}", false},
		"fail/not utf8 keys":       {"{\"attrs\":{\"a\xff\":1,\"a\xfe\":2}}", false},
		"fail/wrong type":          {`{"subject":1020}`, false},
		"fail/array":               {`[{"subject":"1020"}]`, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var r request
			err := Unmarshal([]byte(c.body), &r)
			if (err == nil) != c.ok {
				t.Fatalf("Unmarshal(%q) = %v, want ok=%v", c.body, err, c.ok)
			}
		})
	}
}

func TestDecodeBound(t *testing.T) {
	var r request
	body := `{"subject":"` + strings.Repeat("x", MaxBody) + `"}`
	if err := Decode(strings.NewReader(body), &r); err == nil || r.Subject != "" {
		t.Fatalf("a body over %d bytes was read: %v", MaxBody, err)
	}
	fit := `{"subject":"` + strings.Repeat("x", MaxBody-len(`{"subject":""}`)) + `"}`
	if err := Decode(strings.NewReader(fit), &r); err != nil || len(fit) != MaxBody {
		t.Fatalf("a body of exactly %d bytes was refused: %v", len(fit), err)
	}
	if err := DecodeLimit(strings.NewReader(`{"subject":"12345"}`), 10, &r); err == nil {
		t.Fatal("DecodeLimit read more than its limit")
	}
}

func TestErrorRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, 418, "some_code", "a \"quoted\" description")
	if rec.Code != 418 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
	}
	var m map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || len(m) != 2 {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	e, ok := ParseError(rec.Body.Bytes())
	if !ok || e.Code != "some_code" || e.Description != `a "quoted" description` {
		t.Fatalf("ParseError = %+v, %v", e, ok)
	}
	for _, b := range []string{``, `nope`, `{}`, `{"error":""}`, `{"active":true}`} {
		if e, ok := ParseError([]byte(b)); ok {
			t.Errorf("ParseError(%q) = %+v, want not an error body", b, e)
		}
	}
}

// FuzzUnmarshal checks the strict rule against a case-folding oracle: any
// body it accepts is valid JSON whose objects have no two keys equal under
// strings.EqualFold, and decoding it leaves nothing a plain decoder would
// read differently.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{`{"subject":"1020"}`, `{"subject":"1020","SUBJECT":"1021"}`, `{"attrs":{"a":[1,{"b":2,"B":3}]}}`, `{"inner":{"name":"x"}}`, `[]`, `"s"`, `{"a":1}{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r request
		err := Unmarshal(b, &r)
		kerr := CheckKeys(b)
		if kerr != nil && err == nil {
			t.Fatalf("Unmarshal accepted %q that CheckKeys refuses: %v", b, kerr)
		}
		if kerr != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("CheckKeys accepted invalid JSON %q", b)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("CheckKeys accepted %q: %v", b, err)
		}
		if k, ok := foldDuplicate(b); ok {
			t.Fatalf("CheckKeys accepted %q with duplicate key %q", b, k)
		}
		if err == nil {
			var top map[string]json.RawMessage
			if json.Unmarshal(b, &top) == nil {
				for k := range top {
					switch k {
					case "subject", "scope", "attrs", "inner":
					default:
						t.Fatalf("Unmarshal accepted %q with key %q, not a field's exact name", b, k)
					}
				}
			}
			var plain request
			if json.Unmarshal(b, &plain) != nil {
				t.Fatalf("Unmarshal accepted %q that encoding/json refuses", b)
			}
			x, _ := json.Marshal(r)
			y, _ := json.Marshal(plain)
			if string(x) != string(y) {
				t.Fatalf("Unmarshal read %s, encoding/json %s", x, y)
			}
		}
	})
}

// foldDuplicate is a slow oracle: it walks every object with a token
// decoder and compares all key pairs with strings.EqualFold.
func foldDuplicate(b []byte) (string, bool) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var walk func() (string, bool)
	walk = func() (string, bool) {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch tok {
		case json.Delim('{'):
			var keys []string
			for dec.More() {
				kt, _ := dec.Token()
				k := kt.(string)
				for _, o := range keys {
					if strings.EqualFold(o, k) {
						return k, true
					}
				}
				keys = append(keys, k)
				if k, dup := walk(); dup {
					return k, true
				}
			}
			dec.Token()
		case json.Delim('['):
			for dec.More() {
				if k, dup := walk(); dup {
					return k, true
				}
			}
			dec.Token()
		}
		return "", false
	}
	return walk()
}

type embedded struct {
	Kind string `json:"kind"`
}

type outer struct {
	embedded
	Name    string            `json:"name"`
	NoTag   string            // JSON name "NoTag"
	Skip    string            `json:"-"`
	Items   []item            `json:"items"`
	ByKey   map[string]item   `json:"by_key"`
	Raw     json.RawMessage   `json:"raw"`
	Free    map[string]any    `json:"free"`
	Ptr     *item             `json:"ptr"`
	private string            //nolint:unused
	Texts   map[string]string `json:"texts"`
}

type item struct {
	ID string `json:"id"`
}

func TestUnmarshalExactNames(t *testing.T) {
	cases := map[string]struct {
		body string
		ok   bool
	}{
		"ok/all":                {`{"kind":"k","name":"n","NoTag":"x","items":[{"id":"1"}],"by_key":{"A":{"id":"2"}},"raw":{"ANY":1,"Case":2},"free":{"Mixed":1},"ptr":{"id":"3"},"texts":{"K":"v"}}`, true},
		"fail/title field":      {`{"Name":"n"}`, false},
		"fail/upper field":      {`{"NAME":"n"}`, false},
		"fail/embedded case":    {`{"Kind":"k"}`, false},
		"fail/untagged case":    {`{"notag":"x"}`, false},
		"fail/in slice":         {`{"items":[{"id":"1"},{"ID":"2"}]}`, false},
		"fail/in map value":     {`{"by_key":{"a":{"Id":"2"}}}`, false},
		"fail/in pointer":       {`{"ptr":{"iD":"3"}}`, false},
		"fail/kelvin":           {"{\"\u212aind\":\"k\"}", false},
		"fail/long s":           {"{\"na\u017fe\":\"n\"}", false},
		"fail/skipped field":    {`{"Skip":"x"}`, false},
		"fail/unexported field": {`{"private":"x"}`, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var o outer
			err := Unmarshal([]byte(c.body), &o)
			if (err == nil) != c.ok {
				t.Fatalf("Unmarshal(%s) = %v, want ok=%v", c.body, err, c.ok)
			}
		})
	}
}
