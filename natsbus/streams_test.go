package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
)

func openLocal(t *testing.T, ctx context.Context) *Bus {
	t.Helper()
	url := localURL()
	requireNATS(t, url)
	prefix := fmt.Sprintf("custos-test-%d", rand.Uint32())
	b, err := Open(ctx, Config{URL: url, Prefix: prefix, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range b.streams {
			b.js.DeleteStream(context.Background(), s)
		}
		b.Close()
	})
	return b
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Every follower of the issuance stream sees every record, including those
// published before it started, and a revocation after its issuance.
func TestIssuanceEveryGatewaySeesEveryRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := openLocal(t, ctx)
	exp := time.Unix(1_750_000_900, 0).UTC()
	rec := func(i int) ledger.Record {
		return ledger.Record{Hash: ledger.HashToken(fmt.Sprint("tok-", i)), Exp: exp}
	}
	for i := 0; i < 50; i++ {
		if err := b.PublishIssuance(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishIssuance(ctx, rec(3)); err != nil { // a retried publish is stored once
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := [2]map[ledger.Hash][]bool{{}, {}}
	for g := 0; g < 2; g++ {
		go b.ConsumeIssuance(ctx, func(r ledger.Record) error {
			if !r.Exp.Equal(exp) {
				t.Errorf("exp %v, want %v", r.Exp, exp)
			}
			mu.Lock()
			seen[g][r.Hash] = append(seen[g][r.Hash], r.Revoked)
			mu.Unlock()
			return nil
		})
	}
	revoked := rec(7)
	revoked.Revoked = true
	if err := b.PublishIssuance(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both gateways to see 50 records and the revocation", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[0]) == 50 && len(seen[1]) == 50 && len(seen[0][revoked.Hash]) == 2 && len(seen[1][revoked.Hash]) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	for g := range seen {
		if got := seen[g][revoked.Hash]; !(got[0] == false && got[1] == true) {
			t.Fatalf("gateway %d saw %v for the revoked token, want issue then revoke", g, got)
		}
		if len(seen[g][rec(3).Hash]) != 1 {
			t.Fatalf("gateway %d saw a duplicated publish %d times", g, len(seen[g][rec(3).Hash]))
		}
	}
}

// A follower that fails stops with the failure.
func TestConsumeIssuanceStopsOnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := openLocal(t, ctx)
	if err := b.PublishIssuance(ctx, ledger.Record{Hash: ledger.HashToken("x"), Exp: time.Unix(2e9, 0)}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := b.ConsumeIssuance(ctx, func(ledger.Record) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
}

// A gateway starting late gets the current state of every key, then changes.
func TestKeysLatestStatePerKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := openLocal(t, ctx)
	for _, k := range []keys.Key{
		{KID: "k1", Alg: keys.EdDSA, State: keys.Active},
		{KID: "k2", Alg: keys.EdDSA, State: keys.Active},
		{KID: "k1", Alg: keys.EdDSA, State: keys.VerifyOnly},
		{KID: "k1", Alg: keys.EdDSA, State: keys.Revoked},
	} {
		if err := b.PublishKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishKey(ctx, keys.Key{KID: "k3"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("key without state: %v", err)
	}
	var mu sync.Mutex
	var got []string
	go b.ConsumeKeys(ctx, func(k keys.Key) error {
		mu.Lock()
		got = append(got, k.KID+"="+string(k.State))
		mu.Unlock()
		return nil
	})
	eventually(t, "the latest state of both keys", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	if err := b.PublishKey(ctx, keys.Key{KID: "k2", State: keys.Revoked}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation of k2", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"k1=revoked": true, "k2=active": true}
	if !want[got[0]] || !want[got[1]] || got[0] == got[1] || got[2] != "k2=revoked" {
		t.Fatalf("key changes seen %v", got)
	}
}

// An alert published twice under one id is handled once.
func TestAlertsDeduplicated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := openLocal(t, ctx)
	for _, id := range []string{"a1", "a2", "a1"} {
		if err := b.PublishAlert(ctx, id, map[string]string{"rule": "not_issued", "id": id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PublishAlert(ctx, "", 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("alert without id: %v", err)
	}
	var mu sync.Mutex
	got := map[string]int{}
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.ConsumeAlerts(cctx, "notify", func(id string, a json.RawMessage) error {
			var body map[string]string
			if err := json.Unmarshal(a, &body); err != nil || body["id"] != id {
				t.Errorf("alert %s body %s", id, a)
			}
			mu.Lock()
			got[id]++
			mu.Unlock()
			return nil
		})
	}()
	eventually(t, "two alerts", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	time.Sleep(300 * time.Millisecond)
	ccancel()
	<-done
	if got["a1"] != 1 || got["a2"] != 1 {
		t.Fatalf("alerts handled %v", got)
	}
}

// The gateway-facing sink publishes to the access stream.
func TestSink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := openLocal(t, ctx)
	s := b.Sink(ctx)
	for i := 0; i < 10; i++ {
		s.Publish(ev(i, "192.0.2.1"))
	}
	if err := b.Flush(ctx); err != nil || s.Dropped() != 0 {
		t.Fatalf("flush %v, dropped %d", err, s.Dropped())
	}
	var mu sync.Mutex
	n := 0
	go b.Consume(ctx, "det", b.Partitions(0, 1), func(event.Access) error { mu.Lock(); n++; mu.Unlock(); return nil })
	eventually(t, "ten events", func() bool { mu.Lock(); defer mu.Unlock(); return n == 10 })
}

func FuzzDecodeIssuance(f *testing.F) {
	good, _ := EncodeIssuance(ledger.Record{Hash: ledger.HashToken("t"), Exp: time.Unix(1_750_000_000, 0), Revoked: true})
	f.Add(good)
	f.Add([]byte(`{"hash":"00","exp":1}`))
	f.Add([]byte(`{"hash":"` + fmt.Sprintf("%064x", 0) + `","exp":0}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeIssuance(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		again, err := EncodeIssuance(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := DecodeIssuance(again)
		if err != nil || r2 != r {
			t.Fatalf("round trip %+v → %+v, %v", r, r2, err)
		}
	})
}

func TestOpenConfig(t *testing.T) {
	_, err := Open(context.Background(), Config{URL: "nats://127.0.0.1:1", Partitions: 2, AccessStreams: 3})
	if err == nil || !strings.Contains(err.Error(), "3 access streams for 2 partitions") {
		t.Fatalf("fail/more-streams-than-partitions: err %v", err)
	}
	_, err = Open(context.Background(), Config{URL: "nats://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "failed to connect") {
		t.Fatalf("fail/unreachable: err %v", err)
	}
}
