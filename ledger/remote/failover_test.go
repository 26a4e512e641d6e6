package remote

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/custos-dev/custos/ledger"
)

// A gateway given two authority replicas follows the first; when it dies the
// second takes over the stream within a second, lookups of hashes only the
// second knows are answered by it, and its revocations reach the index.
func TestFailoverBetweenAuthorities(t *testing.T) {
	a1, a2 := startAuthority(t, nil), startAuthority(t, nil)
	c := NewFailover([]string{a1.srv.URL, a2.srv.URL + "/"}, http.DefaultClient, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	h1 := a1.put(t)
	waitIndex(t, c, h1, ledger.Live, 2*time.Second)
	waitSynced(t, c)
	if c.Following() != a1.srv.URL {
		t.Fatalf("following %s first", c.Following())
	}

	// "unknown" from a reachable replica is an answer (replicas on a shared
	// ledger all know every hash); only one that cannot answer passes the
	// question on.
	h2 := a2.put(t)
	if st, err := c.Status(ctx, h2); err != nil || st != ledger.Unknown {
		t.Fatalf("unknown at the followed replica: %v, %v", st, err)
	}

	a1.stop()
	at := time.Now()
	// fail/first-dead: lookups go to the second replica at once.
	h3 := a2.put(t)
	if st, err := c.Status(ctx, h3); err != nil || st != ledger.Live {
		t.Fatalf("lookup with the first authority dead: %v, %v", st, err)
	}
	// The stream from the dead authority may still count as synced for a
	// moment: wait for the follow to move, within the takeover bound.
	for deadline := at.Add(time.Second); c.Following() != a2.srv.URL; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("following %s after the first authority died", c.Following())
		}
	}
	waitSynced(t, c)
	if d := time.Since(at); d > time.Second {
		t.Fatalf("took over in %s", d)
	}
	waitIndex(t, c, h2, ledger.Live, time.Second) // from the second's snapshot
	if err := a2.l.Revoke(ctx, h3); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, c, h3, ledger.Revoked, time.Second)

	// fail/all-dead: unavailable, never live.
	a2.stop()
	h4 := ledger.HashToken("never seen")
	if st, err := c.Status(ctx, h4); !errors.Is(err, ledger.ErrUnavailable) || st != ledger.Unknown {
		t.Fatalf("every authority dead: %v, %v; want ErrUnavailable", st, err)
	}
}

// An authority behind its peers (503 on the stream) is passed over for the
// next one.
func TestFailoverPassesOverAuthorityBehind(t *testing.T) {
	behind := startAuthority(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"ledger_unavailable"}`, http.StatusServiceUnavailable)
		})
	})
	good := startAuthority(t, nil)
	c := NewFailover([]string{behind.srv.URL, good.srv.URL}, http.DefaultClient, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	h := good.put(t)
	waitIndex(t, c, h, ledger.Live, 2*time.Second)
	if c.Following() != good.srv.URL {
		t.Fatalf("following %s", c.Following())
	}
}
