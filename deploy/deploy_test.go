// Package deploy holds the files that deploy custos (systemd unit, Grafana
// dashboard, Kubernetes manifests); its tests check them with the tools and
// types that read them.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/internal/testenv"
)

// verify runs systemd-analyze verify on unit (with ExecStart's binary
// pointed at one that exists) and returns what it said.
func verify(t *testing.T, unit string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit = strings.ReplaceAll(unit, "/usr/local/bin/custos", exe)
	p := filepath.Join(dir, "custos.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// The unit passes systemd-analyze verify without a warning; a unit with an
// unknown key or a bad value does not.
func TestSystemdUnit(t *testing.T) {
	_, err := exec.LookPath("systemd-analyze")
	testenv.Require(t, "systemd-analyze (apt-get install systemd)", err)
	b, err := os.ReadFile("systemd/custos.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"ExecStart=/usr/local/bin/custos serve", "User=custos", "NoNewPrivileges=yes", "--log-format json"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if out, err := verify(t, unit); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, bad := range []string{
		strings.Replace(unit, "ProtectSystem=strict", "ProtectSystem=sometimes", 1),
		strings.Replace(unit, "[Service]", "[Service]\nRestartAfterSeconds=2", 1),
	} {
		if out, err := verify(t, bad); err == nil && out == "" {
			t.Error("a broken unit verified clean")
		}
	}
}
