package redis

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
)

func openTest(t *testing.T, s *server) *Backend {
	t.Helper()
	b, err := Open(context.Background(), s.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The index keys are named by the jti and the subject as they are, under
// their own prefixes, and each expires no earlier than its longest-lived
// member's record: a shorter token's put never shortens it (EXPIRE GT), a
// longer one's lengthens it. Find prunes members expired as of its now.
func TestIndexKeysExpireWithTheirLongestMember(t *testing.T) {
	s := startServer(t)
	b := openTest(t, s)
	ctx := context.Background()
	long := entry(time.Now().Add(2 * time.Hour))
	short := entry(time.Now().Add(10 * time.Minute))
	longer := entry(time.Now().Add(5 * time.Hour))
	for _, e := range []*ledger.Entry{&long, &short, &longer} {
		e.Subject = "7:x"
	}
	ttl := func(k string) time.Duration {
		t.Helper()
		d, err := b.c.TTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sk := "custos:ledger-sub:7:x"
	near := func(got, want time.Duration) bool { return got >= want-3*time.Second && got <= want+time.Second }
	put := func(e ledger.Entry) {
		t.Helper()
		if err := b.PutBatch(ctx, []ledger.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}

	put(long)
	for _, k := range []string{sk, "custos:ledger-jti:" + long.JTI} {
		if got, rec := ttl(k), ttl(key(long.Hash)); !near(got, rec) {
			t.Fatalf("%s: TTL %s, want its member's record's %s", k, got, rec)
		}
	}
	put(short)
	if got, rec := ttl(sk), ttl(key(long.Hash)); !near(got, rec) {
		t.Fatalf("a shorter token's put changed the subject index's TTL to %s, want %s", got, rec)
	}
	if got, rec := ttl("custos:ledger-jti:"+short.JTI), ttl(key(short.Hash)); !near(got, rec) {
		t.Fatalf("short token's jti index: TTL %s, want %s", got, rec)
	}
	put(longer)
	if got, rec := ttl(sk), ttl(key(longer.Hash)); !near(got, rec) {
		t.Fatalf("a longer token's put left the subject index's TTL at %s, want %s", got, rec)
	}
	if n := b.c.ZCard(ctx, sk).Val(); n != 3 {
		t.Fatalf("subject index holds %d members, want 3", n)
	}
	// Nothing else was written: three records, three jti keys, one subject key.
	keys, err := b.c.Keys(ctx, "*").Result()
	if err != nil || len(keys) != 7 {
		t.Fatalf("keys %q, %v; want 7", keys, err)
	}

	// Searched after long's expiry: it is not returned, and kept in the
	// index for as long as its record is kept (a clock a little ahead
	// prunes nothing still live elsewhere).
	hs, err := b.Find(ctx, "", "7:x", long.ExpiresAt)
	if err != nil || len(hs) != 1 || hs[0] != longer.Hash {
		t.Fatalf("Find after two expiries = %v, %v", hs, err)
	}
	if n := b.c.ZCard(ctx, sk).Val(); n != 2 {
		t.Fatalf("subject index holds %d members a second after long's expiry, want 2 (long kept a minute)", n)
	}
	// A minute past it: short and long are pruned.
	hs, err = b.Find(ctx, "", "7:x", long.ExpiresAt.Add(recordKeptPastExpiry))
	if err != nil || len(hs) != 1 || hs[0] != longer.Hash {
		t.Fatalf("Find after two expiries = %v, %v", hs, err)
	}
	if n := b.c.ZCard(ctx, sk).Val(); n != 1 {
		t.Fatalf("subject index holds %d members after the search, want the 1 live", n)
	}
	// Searched after the last one's expiry, the index key is gone.
	if hs, err := b.Find(ctx, "", "7:x", longer.ExpiresAt.Add(recordKeptPastExpiry)); err != nil || len(hs) != 0 {
		t.Fatalf("Find after every expiry = %v, %v", hs, err)
	}
	if n := b.c.Exists(ctx, sk).Val(); n != 0 {
		t.Fatal("an emptied index key was kept")
	}
}

// A subject who keeps logging in keeps one index key whose TTL only grows:
// each put prunes the subject's expired members, so it does not grow with
// every token the subject was ever issued.
func TestPutPrunesSubjectIndex(t *testing.T) {
	s := startServer(t)
	b := openTest(t, s)
	ctx := context.Background()
	sk := "custos:ledger-sub:relogs"
	for i := range 5 {
		e := entry(time.Now().Add(time.Duration(i-7) * time.Minute)) // expired over a minute ago
		e.Subject = "relogs"
		if err := b.PutBatch(ctx, []ledger.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	recent := entry(time.Now().Add(-10 * time.Second)) // expired, its record still kept
	recent.Subject = "relogs"
	if err := b.PutBatch(ctx, []ledger.Entry{recent}); err != nil {
		t.Fatal(err)
	}
	live := entry(time.Now().Add(time.Hour))
	live.Subject = "relogs"
	if err := b.PutBatch(ctx, []ledger.Entry{live}); err != nil {
		t.Fatal(err)
	}
	if m := b.c.ZRange(ctx, sk, 0, -1).Val(); len(m) != 2 || m[0] != string(recent.Hash[:]) || m[1] != string(live.Hash[:]) {
		t.Fatalf("subject index holds %d members after a live put, want the live one and the one expired 10 s ago", len(m))
	}
}

// A key really goes when its TTL ends (and takes its members with it):
// checked with a token whose record lives one second past Redis's minimum.
func TestIndexKeyExpires(t *testing.T) {
	s := startServer(t)
	b := openTest(t, s)
	ctx := context.Background()
	e := entry(time.Now().Add(-58 * time.Second)) // ttl(): expiry plus a minute, so about 2 s
	if err := b.PutBatch(ctx, []ledger.Entry{e}); err != nil {
		t.Fatal(err)
	}
	k := "custos:ledger-jti:" + e.JTI
	if d := b.c.TTL(ctx, k).Val(); d <= 0 || d > 3*time.Second {
		t.Fatalf("TTL %s", d)
	}
	deadline := time.Now().Add(6 * time.Second)
	for b.c.Exists(ctx, k, "custos:ledger-sub:"+e.Subject).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("index keys still there 6 s after their TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestServerVersion(t *testing.T) {
	for info, want := range map[string]string{
		"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n": "",
		"redis_version:7.2.4\r\n":                          "",
		"# Server\r\nredis_version:8.0.0":                  "",
		"redis_version:10.1.0\n":                           "",
		"redis_version:6.2.14\r\n":                         "too old",
		"redis_version:5.0.7\r\n":                          "too old",
		"redis_version:0.9\r\n":                            "too old",
		"redis_version:7\r\n":                              "unreadable",
		"redis_version:seven.0.1\r\n":                      "unreadable",
		"redis_version:7.-1.0\r\n":                         "unreadable",
		"redis_mode:standalone\r\n":                        "no redis_version",
		"":                                                 "no redis_version",
		"x_redis_version:9.0.0\r\nredis_version:6.0.0\r\n": "too old",
		"# Server\r\nredis_version:7.2.4\r\n# Cluster\r\ncluster_enabled:1\r\n": "Redis Cluster",
		"# Server\r\nredis_version:7.2.4\r\n# Cluster\r\ncluster_enabled:0\r\n": "",
	} {
		err := checkVersion(info)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("checkVersion(%q) = %v, want %q", info, err, want)
		}
	}
}

// Open refuses a server older than 7.0, whatever else it answers, and a
// Redis Cluster node.
func TestOpenRefusesOldOrClusterServer(t *testing.T) {
	addr := fakeServer(t, "# Server\r\nredis_version:7.2.4\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n")
	if _, err := Open(context.Background(), "redis://"+addr+"/0"); err == nil || !strings.Contains(err.Error(), "Redis Cluster") {
		t.Fatalf("Open of a Cluster node = %v, want refused", err)
	}
	for _, v := range []string{"6.2.14", "7.0.0"} {
		addr := fakeServer(t, "# Server\r\nredis_version:"+v+"\r\nredis_mode:standalone\r\n")
		b, err := Open(context.Background(), "redis://"+addr+"/0")
		if v == "7.0.0" {
			if err != nil {
				t.Fatalf("Open of a %s server: %v", v, err)
			}
			b.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "redis server 6.2 is too old") {
			t.Fatalf("Open of a %s server = %v, want refused as too old", v, err)
		}
	}
}

// fakeServer answers the commands a client sends when it connects, PING,
// INFO with the section of info asked for, and GET with nil (no shard
// marker).
func fakeServer(t *testing.T, info string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					args, err := readCommand(r)
					if err != nil {
						return
					}
					var out string
					switch strings.ToLower(args[0]) {
					case "hello":
						out = "-ERR unknown command 'HELLO'\r\n"
					case "ping":
						out = "+PONG\r\n"
					case "info": // the section asked for: "# Cluster" on, or what is before it
						server, cluster, _ := strings.Cut(info, "# Cluster")
						sec := server
						if len(args) > 1 && args[1] == "cluster" {
							sec = "# Cluster" + cluster
						}
						out = "$" + strconv.Itoa(len(sec)) + "\r\n" + sec + "\r\n"
					case "client", "select":
						out = "+OK\r\n"
					case "get": // no shard marker
						out = "$-1\r\n"
					default:
						out = "-ERR unknown command\r\n"
					}
					if _, err := c.Write([]byte(out)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var n int
	if _, err := fmt.Sscanf(line, "*%d\r\n", &n); err != nil || n < 1 {
		return nil, fmt.Errorf("bad command %q", line)
	}
	args := make([]string, n)
	for i := range args {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		var l int
		if _, err := fmt.Sscanf(line, "$%d\r\n", &l); err != nil {
			return nil, fmt.Errorf("bad argument %q", line)
		}
		b := make([]byte, l+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		args[i] = string(b[:l])
	}
	return args, nil
}

// FuzzServerVersion: any INFO answer is either refused or read as a
// version with non-negative parts, and a version written out reads back.
func FuzzServerVersion(f *testing.F) {
	f.Add("# Server\r\nredis_version:7.0.15\r\n", 7, 0)
	f.Add("redis_version:6.2.14\r\n", 6, 2)
	f.Add("redis_version:\r\n", 1, 1)
	f.Add("redis_version:99999999999999999999.1\n", 0, 0)
	f.Fuzz(func(t *testing.T, info string, major, minor int) {
		if ma, mi, err := serverVersion(info); err == nil && (ma < 0 || mi < 0) {
			t.Fatalf("%q read as %d.%d", info, ma, mi)
		}
		checkVersion(info)
		if major < 0 || minor < 0 {
			return
		}
		ma, mi, err := serverVersion(fmt.Sprintf("# Server\r\nredis_version:%d.%d.3\r\n", major, minor))
		if err != nil || ma != major || mi != minor {
			t.Fatalf("%d.%d read back as %d.%d, %v", major, minor, ma, mi, err)
		}
		if ok := checkVersion(fmt.Sprintf("redis_version:%d.%d.0\r\n", major, minor)) == nil; ok != (major > 7 || major == 7 && minor >= 0) {
			t.Fatalf("%d.%d accepted: %v", major, minor, ok)
		}
	})
}
