package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/event"
)

// runCLI runs the custos command line and returns its output and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String() + err.Error(), ee.code
	}
	return out.String() + err.Error(), 2
}

// buildAuditLog writes a log of n entries plus one digested access event
// into DATA/audit and returns DATA and the event.
func buildAuditLog(t *testing.T, n int) (string, event.Access) {
	t.Helper()
	data := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := audit.NewNoteSigner("custos.test/audit", priv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := audit.Options{BatchMaxAge: 2 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}
	l, err := audit.Open(ctx, filepath.Join(data, "audit"), s, opts)
	if err != nil {
		t.Fatal(err)
	}
	vs := make([]any, n)
	for i := range vs {
		vs[i] = map[string]int{"n": i}
	}
	if err := l.AppendMany(ctx, "key.rotate", vs); err != nil {
		t.Fatal(err)
	}
	d, err := audit.NewDigester(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := event.Access{Time: time.Unix(1764403200, 0).UTC(), RequestID: "r-1", Verdict: event.Allow, Subject: "m-1"}
	d.Add(ev)
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return data, ev
}

func TestAuditVerifyCommand(t *testing.T) {
	data, _ := buildAuditLog(t, 600)
	dir := filepath.Join(data, "audit")
	hist, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if err != nil || len(hist) < 2 {
		t.Fatalf("checkpoint history: %v %d files", err, len(hist))
	}
	older := filepath.Join(dir, "checkpoints", hist[0].Name())
	srv := httptest.NewServer(audit.NewHandler(dir))
	defer srv.Close()

	out, code := runCLI(t, "audit", "verify", "--data", data, "--since", older)
	if code != 0 || !strings.Contains(out, "601 entries") {
		t.Fatalf("ok/dir: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "audit", "verify", "--data", "", "--dir", "", "--since", "", "--url", srv.URL+"/audit/", "--vkey", filepath.Join(dir, "vkey"), "--json")
	var res struct {
		OK   bool   `json:"ok"`
		Size uint64 `json:"size"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.OK || res.Size != 601 {
		t.Fatalf("ok/url-json: exit %d: %s", code, out)
	}
	// A bar on standard error when asked for; standard output stays JSON.
	o, e, code := cli(t, "audit", "verify", "--data", data, "--progress", "--json")
	if code != 0 || json.Unmarshal([]byte(o), &res) != nil || !strings.Contains(e, "verify") || !strings.Contains(e, "3/3") {
		t.Fatalf("ok/progress: exit %d: stdout %q stderr %q", code, o, e)
	}
	if _, e, _ := cli(t, "audit", "verify", "--data", data); e != "" {
		t.Fatalf("ok/no-progress-off-terminal: stderr %q", e)
	}
	if _, code := runCLI(t, "audit", "verify", "--url", "", "--data", "", "--dir", "", "--vkey", ""); code != 2 {
		t.Fatalf("fail/no-location: exit %d, want 2", code)
	}

	// Flip one byte of entry 300 (bundle 1, entry 44): exit 1 naming it.
	p := filepath.Join(dir, "tile/entries/001")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for range 44 {
		off += 2 + (int(b[off])<<8 | int(b[off+1]))
	}
	n := int(b[off])<<8 | int(b[off+1])
	b[off+2+n-3] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "audit", "verify", "--url", "", "--vkey", "", "--json=false", "--data", data)
	if code != 1 || !strings.Contains(out, "entry 300") || !strings.Contains(out, "tile/entries/001") {
		t.Fatalf("fail/flipped: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "audit", "verify", "--data", data, "--json")
	var bad struct {
		OK    bool   `json:"ok"`
		Index uint64 `json:"index"`
		File  string `json:"file"`
	}
	if code != 1 || json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &bad) != nil || bad.OK || bad.Index != 300 || bad.File != "tile/entries/001" {
		t.Fatalf("fail/flipped-json: exit %d: %s", code, out)
	}
}

func TestAuditProveExportWitness(t *testing.T) {
	data, ev := buildAuditLog(t, 300)
	dir := filepath.Join(data, "audit")
	vk := filepath.Join(dir, "vkey")

	out, code := runCLI(t, "audit", "prove", "--data", data, "--index", "257", "--event", "")
	var ep audit.EntryProof
	if code != 0 || json.Unmarshal([]byte(out), &ep) != nil || ep.Index != 257 {
		t.Fatalf("ok/prove-index: exit %d: %s", code, out)
	}
	evFile := filepath.Join(t.TempDir(), "event.json")
	eb, _ := json.Marshal(ev)
	os.WriteFile(evFile, eb, 0o644)
	out, code = runCLI(t, "audit", "prove", "--data", data, "--index", "-1", "--event", evFile)
	var ap audit.AccessProof
	if code != 0 || json.Unmarshal([]byte(out), &ap) != nil || ap.Count != 1 {
		t.Fatalf("ok/prove-event: exit %d: %s", code, out)
	}
	other := ev
	other.RequestID = "r-2"
	ob, _ := json.Marshal(other)
	os.WriteFile(evFile, ob, 0o644)
	if out, code := runCLI(t, "audit", "prove", "--data", data, "--index", "-1", "--event", evFile); code != 1 {
		t.Fatalf("fail/prove-unknown-event: exit %d: %s", code, out)
	}
	if out, code := runCLI(t, "audit", "prove", "--data", data, "--index", "9999", "--event", ""); code != 1 {
		t.Fatalf("fail/prove-beyond: exit %d: %s", code, out)
	}
	if _, code := runCLI(t, "audit", "prove", "--data", data, "--index", "-1", "--event", ""); code != 2 {
		t.Fatalf("fail/prove-nothing: exit %d", code)
	}

	exp := filepath.Join(t.TempDir(), "export")
	if out, code := runCLI(t, "audit", "export", "--data", data, "--out", exp); code != 0 {
		t.Fatalf("ok/export: exit %d: %s", code, out)
	}
	if h, err := os.ReadDir(filepath.Join(exp, "checkpoints")); err != nil || len(h) == 0 {
		t.Fatalf("export lacks checkpoint history: %v", err)
	}
	if out, code := runCLI(t, "audit", "verify", "--data", "", "--dir", exp, "--vkey", ""); code != 0 {
		t.Fatalf("ok/verify-export: exit %d: %s", code, out)
	}

	srv := httptest.NewServer(audit.NewHandler(dir))
	defer srv.Close()
	state := filepath.Join(t.TempDir(), "state")
	if out, code := runCLI(t, "audit", "witness", srv.URL+"/audit/", "--state", state, "--once", "--vkey", vk); code != 0 {
		t.Fatalf("ok/witness: exit %d: %s", code, out)
	}
	hist, _ := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if len(hist) < 2 {
		t.Skip("need two checkpoints")
	}
	// Serve the oldest checkpoint as the current one: rollback from the state.
	oldDir := t.TempDir()
	oldCP, _ := os.ReadFile(filepath.Join(dir, "checkpoints", hist[0].Name()))
	os.WriteFile(filepath.Join(oldDir, "checkpoint"), oldCP, 0o644)
	srv2 := httptest.NewServer(audit.NewHandler(oldDir))
	defer srv2.Close()
	if out, code := runCLI(t, "audit", "witness", srv2.URL+"/audit/checkpoint", "--state", state, "--once", "--vkey", vk); code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("fail/witness-rollback: exit %d: %s", code, out)
	}
}
