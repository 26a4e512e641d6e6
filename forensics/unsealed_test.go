package forensics

import (
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// An open part is reported with its hour until it is sealed.
func TestOpenParts(t *testing.T) {
	dir := t.TempDir()
	if u, err := OpenParts(dir); err != nil || u.Parts != 0 {
		t.Fatalf("empty store: %+v %v", u, err)
	}
	w, err := NewWriter(dir, WriterOptions{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 24, 3, 20, 0, 0, time.UTC)
	if err := w.Write(event.Access{Time: at, RequestID: "r1", Verdict: event.Allow}); err != nil {
		t.Fatal(err)
	}
	u, err := OpenParts(dir)
	if err != nil || u.Parts != 1 || !u.FirstHour.Equal(at.Truncate(time.Hour)) || u.LastWrite.IsZero() {
		t.Fatalf("open: %+v %v", u, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if u, err := OpenParts(dir); err != nil || u.Parts != 0 {
		t.Fatalf("after seal: %+v %v", u, err)
	}
}
