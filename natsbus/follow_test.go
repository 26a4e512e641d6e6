package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/ledger"
)

// startOne runs one JetStream server on port with its store in dir.
func startOne(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s
}

func record(i int, revoked bool) ledger.Record {
	return ledger.Record{Hash: ledger.HashToken(fmt.Sprint("tok-", i)), Exp: time.Now().Add(time.Hour).Truncate(time.Second), Revoked: revoked}
}

// A follower is caught up only once it has applied every record the stream
// held: at start (a replica that joins late), and after its server went away
// and came back with records it had not seen (a replica that reconnects).
// While the server is gone it is not caught up, within a second.
func TestFollowerCatchesUpBeforeItSaysSo(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := startOne(t, port, dir)
	defer func() { srv.Shutdown() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("custos-follow-%d", rand.Uint32())
	pub, err := Open(ctx, Config{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const n = 2000
	for i := 0; i < n; i++ {
		if err := pub.PublishIssuance(ctx, record(i, i%3 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	px := proctest.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	sub, err := Open(ctx, Config{URL: "nats://" + px.Addr(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var mu sync.Mutex
	applied := map[ledger.Hash]bool{}
	var count atomic.Int64
	f := sub.FollowIssuance(ctx, 50*time.Millisecond, func(r ledger.Record) {
		time.Sleep(200 * time.Microsecond) // a slow replica: catching up takes a while
		mu.Lock()
		applied[r.Hash] = applied[r.Hash] || r.Revoked
		mu.Unlock()
		count.Add(1)
	})
	waitCaught := func(want int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			if f.CaughtUp() {
				if got := count.Load(); got < want {
					t.Fatalf("caught up after applying %d of %d records (stream sequence applied %d)", got, want, f.applied.Load())
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not caught up within %s (%d of %d applied)", within, count.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitCaught(n, 20*time.Second)
	mu.Lock()
	if len(applied) != n || !applied[record(0, true).Hash] || applied[record(1, false).Hash] {
		t.Fatalf("applied %d distinct records, revocations wrong", len(applied))
	}
	mu.Unlock()

	// A new record is applied in milliseconds.
	at := time.Now()
	if err := pub.PublishIssuance(ctx, record(n, true)); err != nil {
		t.Fatal(err)
	}
	for count.Load() < n+1 {
		if time.Since(at) > time.Second {
			t.Fatal("a new record was not applied within 1 s")
		}
		time.Sleep(time.Millisecond)
	}

	// The follower's connection is cut while the other replica goes on
	// publishing: not caught up within a second; once it reconnects it
	// applies what it missed before it says it is caught up again.
	px.Cut()
	at = time.Now()
	for f.CaughtUp() {
		if time.Since(at) > time.Second {
			t.Fatal("still caught up 1 s after losing the connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := n + 1; i < n+1+500; i++ {
		if err := pub.PublishIssuance(ctx, record(i, false)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if f.CaughtUp() {
		t.Fatal("caught up while cut off")
	}
	px.Restore()
	waitCaught(n+1+500, 20*time.Second)

	// The server itself goes away: not caught up within a second.
	srv.Shutdown()
	at = time.Now()
	for f.CaughtUp() {
		if time.Since(at) > time.Second {
			t.Fatal("still caught up 1 s after the server went away")
		}
		time.Sleep(5 * time.Millisecond)
	}
	srv = startOne(t, port, dir)
	waitCaught(n+1+500, 20*time.Second)
}

// Control changes reach every follower in order, malformed kinds and bodies
// are refused at publish.
func TestControlFeed(t *testing.T) {
	port := freePort(t)
	srv := startOne(t, port, t.TempDir())
	defer srv.Shutdown()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("custos-ctl-%d", rand.Uint32())
	b, err := Open(ctx, Config{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, tc := range []struct{ kind, body string }{
		{"", `{}`}, {"a..b", `{}`}, {".a", `{}`}, {"a.", `{}`}, {"a.*", `{}`}, {"a*", `{}`}, {"a>", `{}`}, {"a b", `{}`}, {"ok", `{`}, {"ok", ``},
	} {
		if err := b.PublishControl(ctx, tc.kind, "x", []byte(tc.body)); err == nil {
			t.Errorf("fail/%q %q accepted", tc.kind, tc.body)
		}
	}
	if err := b.PublishControl(ctx, "client-revoked", "c1", []byte(`{"id":"c1"}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishControl(ctx, "client-revoked", "c1", []byte(`{"id":"c1"}`)); err != nil { // retried: stored once
		t.Fatal(err)
	}
	// Kinds are dotted names, as the server's containment.hold.
	if err := b.PublishControl(ctx, "containment.hold", "b1", []byte(`{"cidr":"203.0.113.0/24"}`)); err != nil {
		t.Fatal(err)
	}
	type got struct {
		kind string
		body map[string]string
	}
	for r := 0; r < 2; r++ {
		ch := make(chan got, 10)
		fctx, stop := context.WithCancel(ctx)
		go b.FollowControl(fctx, func(kind string, data []byte) {
			var m map[string]string
			json.Unmarshal(data, &m)
			ch <- got{kind, m}
		})
		first, second := <-ch, <-ch
		if first.kind != "client-revoked" || first.body["id"] != "c1" || second.kind != "containment.hold" || second.body["cidr"] != "203.0.113.0/24" {
			t.Fatalf("follower %d heard %+v then %+v", r, first, second)
		}
		select {
		case extra := <-ch:
			t.Fatalf("a retried announcement was stored twice: %+v", extra)
		case <-time.After(200 * time.Millisecond):
		}
		stop()
	}
}
