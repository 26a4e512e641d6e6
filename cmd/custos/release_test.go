package main

import (
	"bufio"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// releaseBuild is the build command of the Dockerfile's build stage.
func releaseBuild(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmd string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "RUN "); ok && strings.Contains(rest, "go build") {
			if cmd != "" {
				t.Fatal("Dockerfile: more than one go build step")
			}
			cmd = rest
		}
	}
	if cmd == "" {
		t.Fatal("Dockerfile: no go build step")
	}
	for _, want := range []string{"-trimpath", `-ldflags="-s -w"`, `-tags "$TAGS"`, "-o /out/custos", "./cmd/custos"} {
		if !strings.Contains(cmd, want) {
			t.Fatalf("Dockerfile build step %q lacks %s", cmd, want)
		}
	}
	return cmd
}

// The Dockerfile's build step, run as it is with TAGS=noduckdb: the binary
// of the stateless roles is stripped, carries no DuckDB, and says so.
// (TAGS empty is the same command with DuckDB; it takes minutes to link, so
// only the lean variant runs here.)
func TestReleaseBuildWithoutDuckDB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a release binary")
	}
	cmdline := releaseBuild(t)
	out := filepath.Join(t.TempDir(), "custos")
	cmdline = strings.Replace(cmdline, "/out/custos", out, 1)
	build := exec.Command("sh", "-c", cmdline)
	build.Dir = "../.."
	build.Env = append(os.Environ(), "TAGS=noduckdb")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, b)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("release build without DuckDB: %.1f MB", float64(fi.Size())/1e6)

	bi, err := buildinfo.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range bi.Deps {
		if strings.Contains(d.Path, "duckdb") {
			t.Errorf("noduckdb build links %s", d.Path)
		}
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["-trimpath"] != "true" || settings["-tags"] != "noduckdb" {
		t.Errorf("build settings %v: want -trimpath and -tags noduckdb", settings)
	}
	ef, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if ef.Section(".symtab") != nil {
		t.Error("release binary keeps its symbol table (-s)")
	}
	if ef.Section(".debug_info") != nil {
		t.Error("release binary keeps DWARF (-w)")
	}

	b, err := exec.Command(out, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v buildInfo
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, b)
	}
	if v.DuckDB || v.Module != "github.com/custos-dev/custos" || v.Settings["-tags"] != "noduckdb" || !strings.HasPrefix(v.GoVersion, "go1.") {
		t.Errorf("version --json of the lean build: %+v", v)
	}
	// Its roles start; what needs DuckDB says so.
	if b, err := exec.Command(out, "gateway", "--help").CombinedOutput(); err != nil {
		t.Errorf("gateway --help: %v\n%s", err, b)
	}
	b, err = exec.Command(out, "sql", "SELECT 1", "--data", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "without DuckDB") {
		t.Errorf("sql in the lean build: %v\n%s", err, b)
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := cli(t, "version")
	if code != 0 || !strings.HasPrefix(out, "custos ") || !strings.Contains(out, "\ngo ") {
		t.Fatalf("version: %d %q %q", code, out, errOut)
	}
	out, errOut, code = cli(t, "version", "--json")
	if code != 0 {
		t.Fatalf("version --json: %d %s", code, errOut)
	}
	var v buildInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.GoVersion == "" || v.Platform == "" || v.Version == "" || !v.DuckDB {
		t.Fatalf("version --json: %+v", v)
	}
	if _, _, code := cli(t, "version", "extra"); code != 2 {
		t.Fatalf("version with an argument: exit %d, want 2", code)
	}
}

// --log-format json gives one JSON object a line; text is the default; any
// other value is bad usage.
func TestLogFormat(t *testing.T) {
	defer func() { logFormatFlag = "text" }()
	for _, c := range []struct {
		format string
		json   bool
	}{{"text", false}, {"json", true}, {"JSON", false}} {
		t.Run(c.format, func(t *testing.T) {
			err := newRootCmd().PersistentFlags().Set("log-format", c.format)
			if c.format == "JSON" {
				if err == nil {
					t.Fatal("log format JSON (upper case) accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			newLoggerTo(&b).Info("custos serving", "listen", "http://127.0.0.1:7700")
			var v map[string]any
			isJSON := json.Unmarshal([]byte(b.String()), &v) == nil
			if isJSON != c.json || !strings.Contains(b.String(), "custos serving") {
				t.Fatalf("%s log line %q", c.format, b.String())
			}
			if c.json && (v["msg"] != "custos serving" || v["listen"] != "http://127.0.0.1:7700" || v["level"] != "INFO") {
				t.Fatalf("json log line %v", v)
			}
		})
	}
	if _, _, code := cli(t, "version", "--log-format", "xml"); code != 2 {
		t.Fatalf("--log-format xml: exit %d, want 2", code)
	}
}
