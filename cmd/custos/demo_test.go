package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoChild is the custos process of TestDemoRemovesItsData: it runs
// main with the arguments in CUSTOS_DEMO_ARGS when asked to, and is skipped
// otherwise.
func TestDemoChild(t *testing.T) {
	args := os.Getenv("CUSTOS_DEMO_ARGS")
	if args == "" {
		t.Skip("run as a child process by TestDemoRemovesItsData")
	}
	os.Exit(run(strings.Fields(args)))
}

// custos demo keeps its data (KEK, keyring, admin credential) in a temporary
// directory and removes it however it ends: after --exit, and after Ctrl-C
// during the replay or while serving. The demo runs as a separate process
// with its own TMPDIR, and gets a real SIGINT.
func TestDemoRemovesItsData(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo replay")
	}
	for _, tc := range []struct {
		name, args string
		signalAt   string // "" exits by itself; "data" once its directory holds a keyring; "serving" once it serves
	}{
		{"exit", "demo --exit --scale 0.00003", ""},
		{"ctrl-c-during-replay", "demo --scale 0.00003", "data"},
		{"ctrl-c-while-serving", "demo --scale 0.00003", "serving"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestDemoChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "CUSTOS_DEMO_ARGS="+tc.args, "TMPDIR="+tmp)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout = nil
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			serving := make(chan struct{})
			go func() {
				sc := bufio.NewScanner(stderr)
				sc.Split(bufio.ScanRunes)
				var line strings.Builder
				for sc.Scan() {
					line.WriteString(sc.Text())
					if strings.Contains(line.String(), "serving; Ctrl-C stops") {
						close(serving)
						break
					}
					if sc.Text() == "\n" || sc.Text() == "\r" {
						line.Reset()
					}
				}
				for sc.Scan() {
				}
			}()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.After(3 * time.Minute)
			switch tc.signalAt {
			case "data":
				for {
					if m, _ := filepath.Glob(filepath.Join(tmp, "*", "custos", "keyring.sealed")); len(m) > 0 {
						break
					}
					select {
					case err := <-exited:
						t.Fatalf("demo ended before it had data: %v", err)
					case <-deadline:
						t.Fatal("demo wrote no keyring")
					case <-time.After(20 * time.Millisecond):
					}
				}
			case "serving":
				select {
				case <-serving:
				case err := <-exited:
					t.Fatalf("demo ended before serving: %v", err)
				case <-deadline:
					t.Fatal("demo never served")
				}
			}
			if tc.signalAt != "" {
				if m, _ := filepath.Glob(filepath.Join(tmp, "*")); len(m) == 0 {
					t.Fatal("demo has no data directory under TMPDIR: the test would prove nothing")
				}
				if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-exited:
				if tc.signalAt == "" && err != nil {
					t.Fatalf("demo --exit: %v", err)
				}
			case <-deadline:
				cmd.Process.Kill()
				t.Fatal("demo did not end")
			}
			left, _ := filepath.Glob(filepath.Join(tmp, "*"))
			if len(left) != 0 {
				t.Fatalf("demo left %v behind", left)
			}
		})
	}
}

// custos demo shows every layer: the offboarded world refuses the copied
// key as revoked_key, the key-copied world as not_issued (provenance
// alone), and the stolen client secret's real tokens are seen by issuance
// detection; each world lists its incidents with their console pages.
func TestDemoShowsEachLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo replays")
	}
	out, code := runCLI(t, "demo", "--exit", "--scale", "0.00003")
	if code != 0 {
		t.Fatalf("demo exit %d: %s", code, out)
	}
	parts := strings.Split(out, "\n## ")
	if len(parts) != 4 {
		t.Fatalf("%d worlds in the demo, want 3:\n%s", len(parts)-1, out)
	}
	for i, want := range []struct{ refusal, rule string }{
		{"revoked_key", "revoked_or_retired_key"},
		{"not_issued", "not_issued"},
		{"", "issuance_"},
	} {
		w := parts[i+1]
		if want.refusal != "" && !strings.Contains(w, "attack requests refused: "+want.refusal) {
			t.Errorf("world %d refuses nothing as %s:\n%s", i+1, want.refusal, w)
		}
		if want.refusal == "revoked_key" && strings.Contains(w, "not_issued ") {
			t.Errorf("world %d (offboarded) refused as not_issued too:\n%s", i+1, w)
		}
		inc := false
		for _, l := range strings.Split(w, "\n") {
			inc = inc || strings.Contains(l, "/console/incidents/") && strings.Contains(l, want.rule)
		}
		if !inc {
			t.Errorf("world %d lists no console incident with %s:\n%s", i+1, want.rule, w)
		}
	}
}
