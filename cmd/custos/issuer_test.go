package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// serve refuses, before it opens anything, an issuer on a loopback address
// that its listener cannot answer on: discovery would point elsewhere.
func TestServeRefusesIssuerElsewhere(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:7791", "--issuer", "http://127.0.0.1:7700"},
		{"--listen", "127.0.0.1:7791", "--issuer", "http://localhost"},
	} {
		data := filepath.Join(t.TempDir(), "d")
		out, code := runCLI(t, append([]string{"serve", "--data", data}, args...)...)
		if code != 2 || !strings.Contains(out, "discovery") {
			t.Errorf("%v: exit %d, output %q", args, code, out)
		}
	}
}
