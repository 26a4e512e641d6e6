package server_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/store"
)

// sharedHSM stands for one HSM that every authority replica reaches.
type sharedHSM struct {
	mu   sync.Mutex
	keys map[string]ed25519.PrivateKey
}

func (h *sharedHSM) Generate(ctx context.Context, id string, alg keys.Alg) (crypto.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.keys[id] = priv
	h.mu.Unlock()
	return priv.Public(), nil
}

func (h *sharedHSM) Signer(id string) (crypto.Signer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k, ok := h.keys[id]
	if !ok {
		return nil, keys.ErrNotFound
	}
	return k, nil
}

func (h *sharedHSM) Destroy(ctx context.Context, id string) error {
	h.mu.Lock()
	delete(h.keys, id)
	h.mu.Unlock()
	return nil
}

// Two authority replicas on one PostgreSQL store, one Redis ledger and the
// NATS bus, three gateway processes: a key revoked at one replica is refused
// by every gateway within 5 s, and a token issued at one replica passes a
// gateway that follows the other.
func TestReplicasAndGateways(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pg := "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	adminDB, err := store.OpenPostgres(ctx, pg)
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	schema := fmt.Sprintf("custos_rep_%d", mrand.Uint32())
	if _, err := adminDB.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer func() { adminDB.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); adminDB.Close() }()
	rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: 10})
	defer rc.Close()
	testenv.Require(t, "Redis at 127.0.0.1:6379", rc.Ping(ctx).Err())
	requireNATS(t)
	prefix := fmt.Sprintf("custos-rep-%d", mrand.Uint32())
	defer deleteStreams(prefix)

	pop := shop.Population{Members: 100, Missing: 10, Seed: 3}
	sh, _ := shop.New(pop)
	up := httptest.NewServer(sh)
	defer up.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hsm := &sharedHSM{keys: map[string]ed25519.PrivateKey{}}

	base := func() config.Config {
		c := config.Default()
		c.Scale.Store = pg + "&search_path=" + schema
		c.Scale.Redis = "redis://127.0.0.1:6379/10"
		c.Scale.NATS, c.Scale.Prefix = "nats://127.0.0.1:4222", prefix
		c.Issuer = "https://custos.test"
		for _, r := range shop.Routes() {
			c.Gateway.Routes = append(c.Gateway.Routes, config.Route{Pattern: "GET " + r.Pattern, DataClasses: r.DataClasses, SubjectParam: r.SubjectParam})
		}
		return c
	}
	type replica struct {
		s   *server.Server
		url string
		api *api.Client
	}
	var reps []replica
	for i := 0; i < 2; i++ {
		c := base()
		c.Role = "authority"
		c.Data = filepath.Join(t.TempDir(), fmt.Sprint(i))
		s, err := server.OpenWith(ctx, c, log, nil, hsm)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, _, err := s.Keys.Signer(ctx); err != nil { // the first replica makes the key
			t.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go s.Run(ctx, ln, nil)
		u := "http://" + ln.Addr().String()
		a, _ := api.New(u, filepath.Join(c.Data, server.AdminTokenFile))
		reps = append(reps, replica{s, u, a})
	}
	k0, _, _ := reps[0].s.Keys.Signer(ctx)
	k1, _, _ := reps[1].s.Keys.Signer(ctx)
	if k0.KID != k1.KID {
		t.Fatalf("replicas sign with different keys %s and %s", k0.KID, k1.KID)
	}

	var secret struct {
		Secret string `json:"client_secret"`
	}
	if err := reps[0].api.Do(ctx, "POST", "/v1/clients", map[string]any{"name": "login", "audience": []string{config.DefaultAudience}}, &secret); err != nil {
		t.Fatal(err)
	}
	var gws []string
	for i := 0; i < 3; i++ {
		c := base()
		c.Role = "gateway"
		r := reps[i%2]
		c.Gateway.Authority = r.url
		c.Gateway.AuthorityTokenFile = filepath.Join(r.s.Config.Data, server.AdminTokenFile)
		c.Gateway.Upstream = up.URL
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		c.Gateway.Listen = l.Addr().String()
		l.Close()
		go server.RunGateway(ctx, c, log)
		servertest.WaitListening(t, c.Gateway.Listen)
		gws = append(gws, "http://"+c.Gateway.Listen)
	}
	// The client was registered at replica 0; replica 1 serves it from the
	// shared store only after a restart, so issue at replica 0.
	var out struct {
		AccessToken string `json:"access_token"`
	}
	m := fmt.Sprint(pop.MemberID(1))
	if err := reps[0].api.DoAuth(ctx, "POST", "/v1/tokens", secret.Secret, map[string]any{"subject": m, "audience": config.DefaultAudience}, &out); err != nil {
		t.Fatal(err)
	}
	for i, g := range gws {
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, reason := servertest.Get(t, g, out.AccessToken, "/api/members/"+m+"/profile")
			if st == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %d never allowed the issued token: %d %s", i, st, reason)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := reps[0].api.Do(ctx, "POST", "/v1/keys/"+k0.KID+"/revoke", map[string]string{"reason": "custodian left"}, nil); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for i, g := range gws {
		for {
			st, reason := servertest.Get(t, g, out.AccessToken, "/api/members/"+m+"/profile")
			if st == http.StatusUnauthorized && reason == string(event.ReasonRevokedKey) {
				break
			}
			if time.Since(at) > 5*time.Second {
				t.Fatalf("gateway %d still answers %d %q 5 s after the revocation", i, st, reason)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("revocation reached all three gateways in %s", time.Since(at).Round(time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if k, _ := reps[1].s.Keys.Lookup(k0.KID); k.State == keys.Revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica 1 never learnt of the revocation")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
