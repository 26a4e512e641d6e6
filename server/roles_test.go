package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
)

// Scale-out roles over the local NATS: the authority-side gateway publishes
// access events; a detector process raises the alert and a forensics process
// stores the events.
func TestRolesOverNATS(t *testing.T) {
	url := "nats://127.0.0.1:4222"
	requireNATS(t)
	prefix := fmt.Sprintf("custos-roles-%d", rand.Uint32())
	defer deleteStreams(prefix)

	e := startWith(t, func(c *config.Config) {
		c.Scale.NATS, c.Scale.Prefix, c.Scale.Partitions = url, prefix, 2
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	det, fz := e.Cfg, e.Cfg
	det.Role, det.Listen = "detector", servertest.Listen(t).Addr().String()
	fz.Role, fz.Listen, fz.Data = "forensics", servertest.Listen(t).Addr().String(), t.TempDir()
	// The listeners above were only for free ports.
	stopped := make(chan struct{}, 2) // each role's RunRole has returned
	for _, c := range []config.Config{det, fz} {
		c := c
		go func() {
			defer func() { stopped <- struct{}{} }()
			for ctx.Err() == nil {
				if err := server.RunRole(ctx, c, log); err != nil && ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond) // port still held by the probe listener: retry
					continue
				}
				return
			}
		}()
	}

	secret := e.Client(t)
	m := e.Member(5)
	forged := e.Forge(t, m, "forged-roles")
	tok := e.Issue(t, secret, m)
	if st, _ := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("issued: %d", st)
	}
	if st, reason := e.Get(t, forged, "/api/members/"+m+"/profile"); reason != string(event.ReasonNotIssued) {
		t.Fatalf("forged: %d %s", st, reason)
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		var alerts struct {
			Alerts []struct {
				Rule string `json:"rule"`
			} `json:"alerts"`
		}
		resp, err := http.Get("http://" + det.Listen + "/v1/alerts")
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&alerts)
			resp.Body.Close()
		}
		found := false
		for _, a := range alerts.Alerts {
			found = found || a.Rule == "not_issued"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the detector role raised no not_issued alert (%+v, %v)", alerts, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get("http://" + fz.Listen + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("forensics role not ready: %v", err)
	}
	resp.Body.Close()
	cancel()
	// The forensics role seals its files on the way out: wait for both roles to return.
	for range 2 {
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Fatal("a role did not stop within 30 s of its context's end")
		}
	}
	var files []string
	filepath.Walk(filepath.Join(fz.Data, server.EventsDir), func(p string, info os.FileInfo, err error) error {
		if err == nil && filepath.Ext(p) == ".parquet" {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatal("the forensics role wrote no event files")
	}
}

func toStream(prefix string) string {
	b := []byte(prefix)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		if c == '-' || c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

func requireNATS(t *testing.T) {
	t.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Timeout(2*time.Second))
	testenv.Require(t, "NATS JetStream at 127.0.0.1:4222", err)
	nc.Close()
}

// deleteStreams removes the streams a test made under prefix.
func deleteStreams(prefix string) {
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	p := toStream(prefix)
	for name := range js.StreamNames() {
		if len(name) >= len(p) && name[:len(p)] == p {
			js.DeleteStream(name)
		}
	}
}
