package replicatest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/ledger"
)

// A decoy hit on a ledger sharded over two Redis servers revokes the
// customer's tokens on both shards: two authorities issue the customer's
// tokens until each shard holds some (each token's record and index entries
// on the shard its hash picks), the detector queues force_relogin, an
// authority finds the subject's tokens on every shard, and both standalone
// gateways refuse every one of them while another customer is served.
func TestDecoyHitRevokesSubjectTokensOnShardedLedger(t *testing.T) {
	urls := []string{privateRedis(t), privateRedis(t)}
	d := newDeployment(t, direct)
	d.ledgerRedis = urls[0] + "," + urls[1]
	d.detect = "detect:\n  contain: true\n"
	a1, a2, _, cl := d.twoAuthorities()
	g1 := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	g2 := d.gateway("g2", filepath.Join(d.dir, "a1", "admin-token"), a2, a1)
	det := d.detector("d1", 0, 1)
	for _, p := range []*proc{g1, g2, det} {
		p.waitReady(30 * time.Second)
	}
	db := pgOf(t, d)
	shards := make([]*goredis.Client, len(urls))
	for i, u := range urls {
		opt, err := goredis.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		shards[i] = goredis.NewClient(opt)
		defer shards[i].Close()
		if got, want := shards[i].Get(context.Background(), "custos:ledger-shard").Val(), fmt.Sprintf("%d/2", i); got != want {
			t.Fatalf("shard %d's marker %q, want %q", i, got, want)
		}
	}

	issue := func(at *proc, member string) string { return mustIssue(t, at, cl.Secret, member) }
	member, otherMember := fmt.Sprint(d.pop.MemberID(7)), fmt.Sprint(d.pop.MemberID(8))
	const insider, elsewhere = "203.0.113.88", "198.51.100.40"
	// The customer's tokens, from both authorities, until both shards'
	// subject indexes hold some.
	var toks []string
	onShard := func(i int) int64 {
		return shards[i].ZCard(context.Background(), "custos:ledger-sub:"+member).Val()
	}
	for len(toks) < 2 || onShard(0) == 0 || onShard(1) == 0 {
		if len(toks) == 16 {
			t.Fatalf("16 tokens, none on a shard: %d and %d", onShard(0), onShard(1))
		}
		toks = append(toks, issue([]*proc{a1, a2}[len(toks)%2], member))
	}
	t.Logf("%d tokens of the customer: %d on shard 0, %d on shard 1", len(toks), onShard(0), onShard(1))
	other := issue(a1, otherMember)
	for _, g := range []*proc{g1, g2} {
		for i, tok := range toks {
			if st, why, err := accessFrom(g, tok, member, elsewhere); err != nil || st != 200 {
				t.Fatalf("token %d at %s before the hit: %d %s %v", i, g.name, st, why, err)
			}
		}
	}

	hitAt := time.Now()
	if st, why, err := accessFrom(g1, toks[0], decoys[0], insider); err != nil || st == 200 {
		t.Fatalf("decoy served: %d %s %v", st, why, err)
	}
	named := map[string]string{}
	for i, tok := range toks {
		named[fmt.Sprint(i)] = tok
	}
	refused := awaitRevoked(t, []*proc{g1, g2}, named, member, elsewhere, hitAt, func() string {
		return dump(db) + "\n" + a1.tail() + "\n" + a2.tail()
	})
	var last time.Duration
	for _, after := range refused {
		last = max(last, after)
	}
	t.Logf("the subject's %d tokens on both shards refused at both gateways %s after the decoy hit", len(toks), last.Round(time.Millisecond))
	for _, g := range []*proc{g1, g2} {
		if st, why, err := accessFrom(g, other, otherMember, elsewhere); err != nil || st != 200 {
			t.Fatalf("another customer refused at %s: %d %s %v", g.name, st, why, err)
		}
	}
}

// privateRedis starts a redis-server of the test's own on a free loopback
// port and returns its URL.
func privateRedis(t *testing.T) string { return startRedis(t).url }

// redisProc is a redis-server of the test's own, with an append-only file
// (appendfsync always) in a temp dir, so that it can be killed and
// restarted with what it acknowledged.
type redisProc struct {
	t         *testing.T
	port, dir string
	url       string
	cmd       *exec.Cmd
}

func startRedis(t *testing.T) *redisProc {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	testenv.Require(t, "redis-server binary", err)
	port := strconv.Itoa(proctest.FreePort(t))
	r := &redisProc{t: t, port: port, dir: t.TempDir(), url: "redis://127.0.0.1:" + port + "/0"}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", r.port, "--dir", r.dir, "--save", "",
		"--appendonly", "yes", "--appendfsync", "always")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+r.port); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("redis-server did not start")
		}
	}
}

// kill stops the server with SIGKILL.
func (r *redisProc) kill() {
	if r.cmd != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// One shard of the ledger killed with SIGKILL under running authority and
// gateway processes: issuance goes on for tokens whose hash falls on the
// live shard and is refused for the others (no token is handed out without
// its record), every token handed out is served, the authorities report
// the ledger not ready; the shard restarted, issuance is whole again and
// the shard still holds the records it acknowledged.
func TestShardKilledUnderProcesses(t *testing.T) {
	rs := []*redisProc{startRedis(t), startRedis(t)}
	d := newDeployment(t, direct)
	d.ledgerRedis = rs[0].url + "," + rs[1].url
	a1, a2, _, cl := d.twoAuthorities()
	g := d.gateway("g1", filepath.Join(d.dir, "a1", "admin-token"), a1, a2)
	g.waitReady(30 * time.Second)
	shards := make([]*goredis.Client, len(rs))
	for i, r := range rs {
		opt, _ := goredis.ParseURL(r.url)
		shards[i] = goredis.NewClient(opt)
		defer shards[i].Close()
	}
	member := fmt.Sprint(d.pop.MemberID(7))
	issue := func(a *proc) (string, error) {
		var out struct {
			AccessToken string `json:"access_token"`
		}
		_, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": member, "audience": "shop-api"}, &out)
		return out.AccessToken, err
	}
	// onShard is the shard that holds tok's record (-1: none).
	onShard := func(tok string) int {
		k := "custos:ledger:" + ledger.HashToken(tok).String()
		for i, c := range shards {
			if c.Exists(context.Background(), k).Val() == 1 {
				return i
			}
		}
		return -1
	}
	served := func(tok string) bool {
		st, _, err := access(g, tok, member)
		return err == nil && st == 200
	}
	var before []string
	for len(before) < 2 || onShard(before[0]) == onShard(before[len(before)-1]) {
		if len(before) == 16 {
			t.Fatal("16 tokens on one shard")
		}
		tok, err := issue([]*proc{a1, a2}[len(before)%2])
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, tok)
	}
	for _, tok := range before {
		proctestWait(t, 5*time.Second, "a token served", func() bool { return served(tok) })
	}

	rs[1].kill()
	var ok, refused int
	for i := range 24 {
		tok, err := issue([]*proc{a1, a2}[i%2])
		if err != nil {
			refused++
			continue
		}
		ok++
		if sh := onShard(tok); sh != 0 {
			t.Fatalf("a token handed out with shard 1 dead has its record on shard %d", sh)
		}
		proctestWait(t, 5*time.Second, "a token issued with a shard dead served", func() bool { return served(tok) })
	}
	t.Logf("with shard 1 killed: %d tokens issued (all on shard 0), %d refused", ok, refused)
	if ok == 0 || refused == 0 {
		t.Fatalf("with one of two shards dead %d issued and %d refused, want some of each", ok, refused)
	}
	for _, a := range []*proc{a1, a2} {
		proctestWait(t, 5*time.Second, a.name+" not ready with a shard dead", func() bool { st, _ := a.readyz(); return st != 200 })
	}

	rs[1].start()
	proctestWait(t, 15*time.Second, "issuance whole after the shard returns", func() bool {
		for i := range 8 {
			if _, err := issue([]*proc{a1, a2}[i%2]); err != nil {
				return false
			}
		}
		return true
	})
	for _, tok := range before {
		if onShard(tok) < 0 {
			t.Fatal("a record acknowledged before the kill is gone after the restart")
		}
		if !served(tok) {
			t.Fatal("a token issued before the kill is refused after the restart")
		}
	}
}
