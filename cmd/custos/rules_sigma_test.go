package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRulesImportSigma(t *testing.T) {
	ok, _ := filepath.Glob("../../detect/sigma/testdata/ok/*.yml")
	bad := "../../detect/sigma/testdata/fail/query_string.yml"
	o, e, code := cli(t, append([]string{"rules", "import", "sigma"}, ok...)...)
	if code != 0 || strings.Count(o, "- name: sigma_") != len(ok) {
		t.Fatalf("ok/all: exit %d: %s %s", code, o, e)
	}
	// The output is a rules file that `rules test` accepts.
	rf := filepath.Join(t.TempDir(), "sigma.yml")
	os.WriteFile(rf, []byte(o), 0o600)
	if o, e, code := cli(t, "rules", "test", rf); code != 0 || !strings.Contains(o, "rules ok") {
		t.Fatalf("ok/loads: exit %d: %s %s", code, o, e)
	}
	o, e, code = cli(t, "rules", "import", "sigma", ok[0], bad)
	if code != 2 || o != "" || !strings.Contains(e, "query string") || !strings.Contains(e, "nothing written") {
		t.Fatalf("fail/refused: exit %d: %q %q", code, o, e)
	}
	o, e, code = cli(t, "rules", "import", "sigma", ok[0], bad, "--partial")
	if code != 0 || strings.Count(o, "- name: sigma_") != 1 || !strings.Contains(e, "query string") {
		t.Fatalf("ok/partial: exit %d: %q %q", code, o, e)
	}
}
