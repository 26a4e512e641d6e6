package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"
)

// refStrictObject is the obvious, slow reading of strictObject's contract:
// a json.Decoder walk that remembers member names per object.
func refStrictObject(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return errors.New("not an object")
	}
	if err := refObject(dec, 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

func refObject(dec *json.Decoder, depth int) error {
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		if seen[k] {
			return fmt.Errorf("duplicate %q", k)
		}
		seen[k] = true
		if err := refValue(dec, depth); err != nil {
			return err
		}
	}
	_, err := dec.Token()
	return err
}

func refValue(dec *json.Decoder, depth int) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := t.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxDepth {
		return errors.New("too deep")
	}
	if d == '{' {
		return refObject(dec, depth+1)
	}
	for dec.More() {
		if err := refValue(dec, depth+1); err != nil {
			return err
		}
	}
	_, err = dec.Token()
	return err
}

func TestStrictObject(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{` {"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]} `, true},
		{`{"a":1,"a":2}`, false},
		{`{"a":1,"\u0061":2}`, false},
		{`{"a":{"b":1,"b":1}}`, false},
		{`{"a":[{"b":1,"b":1}]}`, false},
		{`{"a":"\"","a\"":1,"a\\":2}`, true},
		{`[]`, false},
		{`{} {}`, false},
		{`{"a":1,}`, false},
		{"{\"a\":\"\xff\"}", false},
	} {
		if err := strictObject([]byte(tc.in), nil); (err == nil) != tc.ok {
			t.Errorf("strictObject(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err := refStrictObject([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("ref(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// FuzzStrictObject checks the fast scanner against the reference.
func FuzzStrictObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"b":[1,{"c":2,"c":3}]}}`, `{"\u0061":1,"a":2}`, `{"alg":"EdDSA","kid":"k"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := strictObject(b, nil), refStrictObject(b)
		if (got == nil) != (want == nil) {
			t.Fatalf("%q: fast=%v ref=%v", b, got, want)
		}
	})
}
