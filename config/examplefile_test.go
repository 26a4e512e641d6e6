package config

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// typePaths lists the YAML key paths of every field of t ("keys.pkcs11.module",
// "gateway.routes[].pattern").
func typePaths(t reflect.Type, prefix string, out *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		p := prefix + name
		*out = append(*out, p)
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath():
			typePaths(ft, p+".", out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			typePaths(ft.Elem(), p+"[].", out)
		}
	}
}

// filePaths lists the key paths of a YAML document and reports keys without
// a comment.
func filePaths(n *yaml.Node, prefix string, paths map[string]bool, uncommented *[]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			filePaths(c, prefix, paths, uncommented)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := prefix + k.Value
			paths[p] = true
			if v.Kind == yaml.ScalarNode || v.Kind == yaml.SequenceNode && v.Style == yaml.FlowStyle {
				if strings.TrimSpace(k.LineComment+v.LineComment) == "" {
					*uncommented = append(*uncommented, p)
				}
			}
			switch v.Kind {
			case yaml.MappingNode:
				filePaths(v, p+".", paths, uncommented)
			case yaml.SequenceNode:
				for _, item := range v.Content {
					filePaths(item, p+"[].", paths, uncommented)
				}
			}
		}
	}
}

// normal compares values with nil and empty slices alike.
func normal(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !normal(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !normal(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// custos.example.yaml names every field of Config, each with a comment, and
// gives each its default: the file cannot drift from the code.
func TestExampleFile(t *testing.T) {
	b, err := os.ReadFile("../custos.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := Parse(b, &c); err != nil {
		t.Fatalf("strict parse: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var uncommented []string
	filePaths(&doc, "", have, &uncommented)
	var want []string
	typePaths(reflect.TypeOf(Config{}), "", &want)
	sort.Strings(want)
	for _, p := range want {
		if !have[p] {
			t.Errorf("custos.example.yaml lacks %s", p)
		}
	}
	for _, p := range uncommented {
		t.Errorf("custos.example.yaml: %s has no comment", p)
	}
	// The example route shows the shape of one; everything else is the default.
	if len(c.Gateway.Routes) == 0 {
		t.Error("custos.example.yaml shows no route")
	}
	c.Gateway.Routes = nil
	// Likewise the example identity provider.
	if len(c.OAuth.ExternalIssuers) == 0 {
		t.Error("custos.example.yaml shows no external issuer")
	}
	c.OAuth.ExternalIssuers = nil
	// And the example provider, which must validate on its own.
	if len(c.Providers) == 0 {
		t.Error("custos.example.yaml shows no provider")
	}
	withProvider := c
	withProvider.Data = t.TempDir()
	if err := withProvider.Validate(); err != nil {
		t.Errorf("example provider does not validate: %v", err)
	}
	c.Providers = nil
	def := Default()
	if !normal(reflect.ValueOf(c), reflect.ValueOf(def)) {
		t.Errorf("custos.example.yaml values differ from Default():\nfile    %+v\ndefault %+v", c, def)
	}
	// With a data directory and no route, the example is a configuration
	// that starts.
	c.Data = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Errorf("example configuration does not validate: %v", err)
	}
	t.Logf("%d fields", len(want))
}
