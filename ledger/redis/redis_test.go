package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/ledger/ledgertest"
)

// server is a redis-server of the test's own, on a free loopback port, with
// an append-only file in a temp dir so it can be stopped and restarted.
type server struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	args []string // instead of the append-only file's, when set
}

func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	testenv.Require(t, "redis-server binary", err)
	s := &server{t: t, dir: t.TempDir(), port: proctest.FreePort(t), args: args}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) url() string { return "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0" }

func (s *server) start() {
	s.t.Helper()
	args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--dir", s.dir, "--save", ""}
	if s.args == nil {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}
	s.cmd = exec.Command("redis-server", append(args, s.args...)...)
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(s.port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatal("redis-server did not start")
}

func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Kill)
		s.cmd.Wait()
		s.cmd = nil
	}
}

func entry(exp time.Time) ledger.Entry {
	var b [16]byte
	rand.Read(b[:])
	return ledger.Entry{Hash: ledger.HashToken(fmt.Sprintf("%x", b)), JTI: fmt.Sprintf("%x", b[:8]), KID: "k1",
		Subject: "1001", Audience: "shop-api", Client: "login", IssuedAt: time.Now().UTC().Truncate(time.Second),
		ExpiresAt: exp.UTC().Truncate(time.Second)}
}

func TestConformance(t *testing.T) {
	s := startServer(t)
	ledgertest.Run(t, func(t *testing.T) ledger.Backend {
		b, err := Open(context.Background(), s.url())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			b.c.FlushDB(context.Background())
			b.Close()
		})
		return b
	})
}

// Redis restarted mid-load: while it is down a miss is ledger_unavailable
// (fail closed) and puts fail; after it is back the same Ledger recovers
// without a restart and tokens issued before the outage still verify.
func TestRestartFailsClosedAndRecovers(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	b, err := Open(ctx, s.url())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := ledger.New(ctx, b, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := entry(time.Now().Add(time.Hour))
	if err := l.Put(ctx, before); err != nil {
		t.Fatal(err)
	}
	// A peer replica's token, written straight to Redis: only a backend lookup finds it.
	peer := entry(time.Now().Add(time.Hour))
	if err := b.PutBatch(ctx, []ledger.Entry{peer}); err != nil {
		t.Fatal(err)
	}

	if n := b.Errors(); n != 0 {
		t.Fatalf("%d errors counted while redis was up (a miss is not one)", n)
	}
	if _, err := b.Get(ctx, ledger.HashToken("never-issued")); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("miss: %v", err)
	}
	if n := b.Errors(); n != 0 {
		t.Fatalf("a miss counted as %d errors", n)
	}
	s.stop()
	if st, err := l.Status(ctx, ledger.HashToken("forged")); !errors.Is(err, ledger.ErrUnavailable) {
		t.Fatalf("miss while redis down: %v %v, want ErrUnavailable", st, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := l.Put(pctx, entry(time.Now().Add(time.Hour))); err == nil {
		t.Fatal("put succeeded while redis was down")
	}
	cancel()
	if st, err := l.Status(ctx, before.Hash); err != nil || st != ledger.Live {
		t.Fatalf("token issued before the outage: %v %v", st, err)
	}
	if b.Errors() == 0 {
		t.Fatal("no Redis error counted during the outage")
	}

	s.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := l.Status(ctx, peer.Hash)
		if err == nil && st == ledger.Live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after restart: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := entry(time.Now().Add(time.Hour))
	if err := l.Put(ctx, after); err != nil {
		t.Fatalf("put after recovery: %v", err)
	}
	// A fresh replica (new process) loads both from Redis.
	l2, err := ledger.New(ctx, b, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for _, e := range []ledger.Entry{before, peer, after} {
		if st := l2.Index().Status(e.Hash, time.Now()); st != ledger.Live {
			t.Fatalf("entry %s not reloaded after restart: %v", e.Hash, st)
		}
	}
}
