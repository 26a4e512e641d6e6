package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
)

// A graceful stop right after a burst: every event published before it is
// processed by detection (none dropped by closing its subscription), every
// alert it raises is anchored in the audit log, and Run returns only once
// its background loops have ended.
func TestShutdownDrains(t *testing.T) {
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	ln := servertest.Listen(t)
	cfg.Issuer = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, nil) }()
	// Run subscribes detection as it starts: wait until an event gets through.
	for deadline := time.Now().Add(30 * time.Second); s.Detect.Events() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("detection never started")
		}
		s.Bus.Publish(event.Access{Time: time.Now(), Gateway: "g", RequestID: "warm", Method: "GET", Path: "/x", Verdict: event.Allow})
	}
	warm := s.Detect.Events()
	before, err := s.Audit.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n, kids = 20000, 40
	now := time.Now()
	for i := 0; i < n; i++ {
		ev := event.Access{Time: now, Gateway: "g", RequestID: fmt.Sprint("r", i), Method: "GET", Route: "GET /x", Path: "/x",
			SrcIP: "198.51.100.7", Verdict: event.Allow, Token: event.Token{JTI: fmt.Sprint("j", i), KID: "k0"}}
		if i%(n/kids) == 0 {
			ev.Verdict, ev.Reason, ev.Token.KID = event.Deny, event.ReasonNotIssued, fmt.Sprint("k", i)
		}
		s.Bus.Publish(ev)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
	}
	if got := s.Detect.Events() - warm; got < n {
		t.Errorf("detection processed %d of %d events published before the stop", got, n)
	}
	var alerts int
	for _, a := range s.Detect.Alerts() {
		if a.Rule == "not_issued" {
			alerts++
		}
	}
	if alerts != kids {
		t.Errorf("%d not_issued alerts, want %d", alerts, kids)
	}
	after, err := s.Audit.Size(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < kids {
		t.Errorf("audit log grew by %d entries, want at least the %d alerts", after-before, kids)
	}
}
