package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/server"
)

// Events in a file not yet sealed are not in the answer, and sql says so.
func TestSQLSaysWhatIsNotSealed(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, server.EventsDir)
	w, err := forensics.NewWriter(dir, forensics.WriterOptions{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(event.Access{Time: time.Date(2025, 6, 24, 3, 5, 0, 0, time.UTC), RequestID: "r1", Verdict: event.Allow}); err != nil {
		t.Fatal(err)
	}
	o, e, code := cli(t, "sql", "SELECT count(*) AS n FROM events", "--data", data, "--json")
	if code != 0 || !strings.Contains(e, "1 event file(s) not yet sealed") || !strings.Contains(e, "2025-06-24T03:00Z") || strings.Contains(o, "sealed") {
		t.Fatalf("exit %d: stdout %q stderr %q", code, o, e)
	}
}
