package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/testenv"
)

// URL of the shared test Redis; keys carry a prefix unique to the run.
const testURL = "redis://127.0.0.1:6379/0"

func open(t *testing.T) (*Replay, string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "custos-test-dpop-" + hex.EncodeToString(b[:]) + ":"
	r, err := Open(context.Background(), testURL, prefix, nil)
	testenv.Require(t, "redis 127.0.0.1:6379", err)
	t.Cleanup(func() { r.Close() })
	return r, prefix
}

// Two clients (two replicas) share what they have seen; the key expires at
// the end of the proof's window; a closed connection fails closed.
func TestReplayShared(t *testing.T) {
	a, prefix := open(t)
	b, err := Open(context.Background(), testURL, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	until := time.Now().Add(90 * time.Second)
	if seen, err := a.Seen(ctx, "k1", until); seen || err != nil {
		t.Fatalf("first use: %v %v", seen, err)
	}
	if seen, err := b.Seen(ctx, "k1", until); !seen || err != nil {
		t.Fatalf("replay at the other replica: seen=%v %v", seen, err)
	}
	ttl := a.c.PTTL(ctx, prefix+"k1").Val()
	if ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("TTL %s, want about 90s", ttl)
	}
	if seen, _ := a.Seen(ctx, "k2", time.Now().Add(-time.Hour)); seen {
		t.Fatal("fresh key seen")
	}
	if ttl := a.c.PTTL(ctx, prefix+"k2").Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("past deadline TTL %s, want the 1s floor", ttl)
	}
	b.Close()
	if _, err := b.Seen(ctx, "k3", until); err == nil {
		t.Fatal("closed client answered")
	}
}
