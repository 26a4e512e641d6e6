package wire

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// checkNames refuses an object key that names a field of the Go value it
// decodes into in another letter case than the field's JSON name. Go's
// decoder would take {"Subject":…} or {"SUBJECT":…} as "subject"; a reader
// in front of custos that matches names exactly would not, so the two would
// see different requests. v is the body decoded into interface values.
func checkNames(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		if custom(t) {
			return nil
		}
		t = t.Elem()
	}
	if custom(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil // the typed decoder reports the wrong type
		}
		fields := fieldsOf(t)
		for k, x := range obj {
			f, ok := fields[k]
			if !ok {
				return fmt.Errorf("bad JSON body: unknown field %q%s (names are case-sensitive)", k, where(at))
			}
			if err := checkNames(x, f, join(at, k)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if obj, ok := v.(map[string]any); ok {
			for k, x := range obj {
				if err := checkNames(x, t.Elem(), join(at, k)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if arr, ok := v.([]any); ok {
			for i, x := range arr {
				if err := checkNames(x, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// custom reports whether t decodes itself; its names are its own business.
func custom(t reflect.Type) bool {
	if t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) {
		return true
	}
	if t.Kind() != reflect.Pointer {
		p := reflect.PointerTo(t)
		return p.Implements(jsonUnmarshaler) || p.Implements(textUnmarshaler)
	}
	return false
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps the exact JSON names of struct type t, embedded structs'
// promoted fields included, to their types, by encoding/json's rules.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	var walk func(t reflect.Type, depth int)
	walk = func(t reflect.Type, depth int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct && depth < 16 {
					walk(et, depth+1)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, taken := m[name]; !taken || depth == 0 {
				m[name] = ft
			}
		}
	}
	walk(t, 0)
	fieldCache.Store(t, m)
	return m
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func where(at string) string {
	if at == "" {
		return ""
	}
	return " in " + at
}
