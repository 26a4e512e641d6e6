package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/custos-dev/custos/internal/testenv"
)

// mariaDB creates a database of its own on the MariaDB at 127.0.0.1:3306
// (root, no password) and returns its mysql:// URL; it is dropped after t.
func mariaDB(t *testing.T) string {
	t.Helper()
	root, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err == nil {
		err = root.Ping()
	}
	testenv.Require(t, "MariaDB at 127.0.0.1:3306", err)
	name := fmt.Sprintf("custos_audit_%d", rand.Uint32())
	if _, err := root.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Exec("DROP DATABASE " + name); root.Close() })
	return "mysql://root@127.0.0.1:3306/" + name
}

// Two replicas append to one log in one database at once: one origin, one
// tree holding every acknowledged entry of both, verifiable from the database
// and over HTTP, with inclusion proofs; a replica with another checkpoint key
// or another origin is refused.
func TestSharedLogOnMySQL(t *testing.T) {
	u := mariaDB(t)
	ctx := context.Background()
	k := newTestKey(t)
	opts := Options{BatchMaxAge: 5 * time.Millisecond, CheckpointInterval: time.Second}
	var logs []*Log
	for i := 0; i < 2; i++ {
		l, err := OpenMySQL(ctx, u, t.TempDir(), k.signer, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(ctx)
		logs = append(logs, l)
	}
	const per = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]string{}
	for r, l := range logs {
		for i := 0; i < per; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := fmt.Sprintf("replica-%d-%d", r, i)
				idx, err := l.appendMany(ctx, "keys.test", []any{map[string]string{"op": want}})
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				mu.Lock()
				acked[idx[0]] = want
				mu.Unlock()
			}()
		}
	}
	// A batch through AppendMany from one replica.
	idx, err := logs[1].appendMany(ctx, "keys.batch", []any{1, 2, 3})
	if err != nil || len(idx) != 3 {
		t.Fatalf("AppendMany: %v %v", idx, err)
	}
	wg.Wait()
	if len(acked) != 2*per {
		t.Fatalf("%d distinct indices for %d acknowledged entries", len(acked), 2*per)
	}
	for _, l := range logs {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const total = 2*per + 3

	// Verified straight from the database.
	res, err := Verify(ctx, u, k.verifier, nil)
	if err != nil {
		t.Fatalf("Verify from the database: %v", err)
	}
	if res.Size != total || res.Origin != testOrigin || res.Kinds["keys.test"] != 2*per || res.Kinds["keys.batch"] != 3 {
		t.Fatalf("verified %+v", res)
	}
	// And over HTTP as a witness sees it, from a third process's view.
	l3, err := OpenMySQL(ctx, u, t.TempDir(), k.signer, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close(ctx)
	srv := httptest.NewServer(http.StripPrefix("/audit", l3.Handler()))
	defer srv.Close()
	res2, err := Verify(ctx, srv.URL+"/audit/", k.verifier, nil)
	if err != nil || res2.Size != total {
		t.Fatalf("Verify over HTTP: %+v %v", res2, err)
	}
	for i, want := range acked {
		if i%97 != 0 {
			continue
		}
		p, err := ProveEntry(ctx, srv.URL+"/audit/", k.verifier, i)
		if err != nil {
			t.Fatalf("prove %d: %v", i, err)
		}
		if err := p.Check(k.verifier); err != nil || !strings.Contains(string(p.Entry), want) {
			t.Fatalf("entry %d: %v %s, want %s", i, err, p.Entry, want)
		}
	}
	// The verifier key is published beside the log.
	resp, err := http.Get(srv.URL + "/audit/verifier")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != k.signer.(verifierKeyer).VerifierKey() {
		t.Fatalf("GET /audit/verifier: %d %q", resp.StatusCode, b)
	}
	for path, code := range map[string]int{
		"/audit/tile/entries/000": 200, "/audit/tile/0/000": 200, "/audit/tile/0/002.p/91": 200,
		"/audit/tile/0/009": 404, "/audit/TreeState": 404, "/audit/tile/../checkpoint": 404, "/audit/verifier/x": 404,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}

	// fail/other-key and fail/other-origin: refused, nothing written.
	other := newTestKey(t)
	if _, err := OpenMySQL(ctx, u, t.TempDir(), other.signer, opts); !errors.Is(err, ErrWrongLog) {
		t.Fatalf("a replica with another checkpoint key: %v", err)
	}
	for _, bad := range []string{"mysql://root@127.0.0.1:3306/", "mysql://root@127.0.0.1:3306/a/b", "postgres://x/y", "mysql:///db"} {
		if _, err := OpenMySQL(ctx, bad, t.TempDir(), k.signer, opts); err == nil {
			t.Errorf("audit log %q accepted", bad)
		}
	}
	res3, err := Verify(ctx, u, k.verifier, res.Checkpoint)
	if err != nil || res3.Size != total {
		t.Fatalf("after refused replicas: %+v %v", res3, err)
	}
}

// With the database gone, an append fails (the operation it records is
// refused) and readiness says so; nothing acknowledged is lost.
func TestSharedLogFailsClosed(t *testing.T) {
	u := mariaDB(t)
	ctx := context.Background()
	k := newTestKey(t)
	l, err := OpenMySQL(ctx, u, t.TempDir(), k.signer, Options{BatchMaxAge: 5 * time.Millisecond, CheckpointInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if err := l.Append(ctx, "keys.rotate", map[string]string{"kid": "a"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// Drop the log's tables under it: an outage as the log sees it.
	db, _ := sql.Open("mysql", strings.TrimPrefix(mustDSN(t, u), ""))
	defer db.Close()
	if _, err := db.Exec("RENAME TABLE TreeState TO TreeStateGone"); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.Append(actx, "keys.rotate", map[string]string{"kid": "b"}); err == nil {
		t.Fatal("append succeeded with the tree state gone")
	}
	if _, err := db.Exec("RENAME TABLE TreeStateGone TO TreeState"); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, "keys.rotate", map[string]string{"kid": "c"}); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	l.Close(ctx)
	res, err := Verify(ctx, u, k.verifier, nil)
	if err != nil || res.Size != 2 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

func mustDSN(t *testing.T, u string) string {
	d, err := MySQLDSN(u)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
