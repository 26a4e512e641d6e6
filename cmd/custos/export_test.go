package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExportCommand(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(in, []byte(`{"time":"2025-06-24T03:00:00Z","request_id":"r1","method":"GET","path":"/x","status":200,"verdict":"allow"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	if o, code := runCLI(t, "export", in, "--format", "ocsf", "--out", out); code != 0 {
		t.Fatalf("ok/ocsf: exit %d: %s", code, o)
	}
	b, _ := os.ReadFile(out)
	var o map[string]any
	if err := json.Unmarshal(b, &o); err != nil || o["class_uid"] != 4002.0 {
		t.Fatalf("ok/ocsf: %s", b)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if o, code := runCLI(t, "export", in, "--format", "cef", "--out", ""); code != 2 || !strings.Contains(o, "native or ocsf") {
		t.Fatalf("fail/format: exit %d: %s", code, o)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	_ = os.WriteFile(bad, []byte("{}\n"), 0o600)
	if o, code := runCLI(t, "export", bad, "--format", "ocsf"); code != 2 || !strings.Contains(o, "line 1") {
		t.Fatalf("fail/record: exit %d: %s", code, o)
	}
}
