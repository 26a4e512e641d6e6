package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/server/servertest"
	"github.com/custos-dev/custos/shop"
)

// env is a running custos (authority, API, gateway before the sample shop).
type env = servertest.Env

func start(t *testing.T) *env { return startWith(t, nil) }

func startWith(t *testing.T, edit func(*config.Config)) *env {
	return servertest.Start(t, servertest.DefaultPopulation, edit)
}

// The whole path: a token the authority issued reaches the shop; one signed
// with the real key but never issued (the stolen-key case) does not, nor do
// other subjects, revoked tokens and revoked keys.
func TestEndToEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	sub := e.S.Bus.Subscribe(1024, false)
	secret := e.Client(t)
	m1, m2 := e.Member(1), e.Member(2)
	tok := e.Issue(t, secret, m1)

	if st, _ := e.Get(t, tok, "/api/members/"+m1+"/profile"); st != 200 {
		t.Fatalf("issued token: %d", st)
	}
	seen := e.Upstream.Load()

	// Signed with the real active key, never issued.
	k, _, err := e.S.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	forged := e.Forge(t, m2, "forged-1")
	for name, tc := range map[string]struct {
		tok, path string
		reason    event.Reason
	}{
		"fail/not_issued":       {forged, "/api/members/" + m2 + "/profile", event.ReasonNotIssued},
		"fail/subject_mismatch": {tok, "/api/members/" + m2 + "/addresses", event.ReasonSubjectMismatch},
		"fail/missing_token":    {"", "/api/members/" + m1 + "/profile", event.ReasonMissingToken},
		"fail/malformed":        {"a.b.c", "/api/members/" + m1 + "/profile", event.ReasonMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			st, reason := e.Get(t, tc.tok, tc.path)
			if st != 401 || reason != string(tc.reason) {
				t.Fatalf("got %d %q, want 401 %q", st, reason, tc.reason)
			}
		})
	}
	if e.Upstream.Load() != seen {
		t.Fatal("the upstream saw a refused request")
	}

	// Introspection agrees: the forged token is not active.
	var in struct {
		Active bool `json:"active"`
	}
	if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/introspect", secret, map[string]string{"token": forged}, &in); err != nil || in.Active {
		t.Fatalf("forged token introspected active=%v err=%v", in.Active, err)
	}

	// Token revocation (RFC 7009) reaches the gateway.
	tok2 := e.Issue(t, secret, m2)
	if err := e.API.DoAuth(ctx, "POST", "/v1/tokens/revoke", secret, map[string]string{"token": tok2}, nil); err != nil {
		t.Fatal(err)
	}
	if st, reason := e.Get(t, tok2, "/api/members/"+m2+"/orders"); st != 401 || reason != string(event.ReasonRevokedToken) {
		t.Fatalf("revoked token: %d %q", st, reason)
	}

	// Key revocation: tokens of the key stop at once; a new key signs.
	if err := e.API.Do(ctx, "POST", "/v1/keys/"+k.KID+"/revoke", map[string]string{"reason": "custodian left"}, nil); err != nil {
		t.Fatal(err)
	}
	if st, reason := e.Get(t, tok, "/api/members/"+m1+"/profile"); st != 401 || reason != string(event.ReasonRevokedKey) {
		t.Fatalf("token of a revoked key: %d %q", st, reason)
	}
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	resp, err := http.Get(e.APIURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&jwks)
	resp.Body.Close()
	for _, jk := range jwks.Keys {
		if jk.KID == k.KID {
			t.Fatal("revoked key still in JWKS")
		}
	}
	tok3 := e.Issue(t, secret, m1)
	if st, _ := e.Get(t, tok3, "/api/members/"+m1+"/addresses"); st != 200 {
		t.Fatalf("token of the new key: %d", st)
	}

	// Decoys never get tokens.
	var decoy string
	for id := uint64(1); id <= e.Pop.IDSpace(); id++ {
		if e.Pop.Kind(id) == shop.Decoy {
			decoy = fmt.Sprint(id)
			break
		}
	}
	err = e.API.DoAuth(ctx, "POST", "/v1/tokens", secret, map[string]any{"subject": decoy, "audience": config.DefaultAudience}, nil)
	if ae, ok := err.(*api.Error); !ok || ae.Status != 403 {
		t.Fatalf("decoy issuance: %v", err)
	}

	// One access event per request, allowed or refused, with the contract fields.
	var evs []event.Access
	deadline := time.After(5 * time.Second)
	for len(evs) < 8 {
		select {
		case b := <-sub.C:
			evs = append(evs, b...)
		case <-deadline:
			t.Fatalf("got %d access events, want 8", len(evs))
		}
	}
	first := evs[0]
	if first.Verdict != event.Allow || first.Subject != m1 || first.Token.Sub != m1 || first.Status != 200 ||
		first.Route == "" || first.SrcIP != "127.0.0.1" || len(first.DataClasses) != 2 || first.RequestID == "" {
		t.Fatalf("allowed event %+v", first)
	}
	b, _ := json.Marshal(evs)
	for _, raw := range []string{tok, forged, tok2} {
		if strings.Contains(string(b), raw) {
			t.Fatal("an access event carries a whole token")
		}
	}
}

// `custos gateway` as its own process follows the authority over HTTP: issued
// tokens pass, forged ones are refused, and a key revocation reaches it within 5 s.
// Without NATS its access events reach the authority's detection over
// POST /v1/events, and a graceful stop delivers the last of them.
func TestStandaloneGateway(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	secret := e.Client(t)
	arrived := e.S.Bus.Subscribe(1<<12, true)
	defer arrived.Close()

	gl := servertest.Listen(t)
	addr := gl.Addr().String()
	gl.Close()
	cfg := e.Cfg
	cfg.Gateway.Listen = addr
	cfg.Gateway.Authority = e.APIURL
	cfg.Gateway.Name = "edge-standalone"
	stopped := make(chan error, 1)
	go func() { stopped <- server.RunGateway(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	servertest.WaitListening(t, addr)
	gw := "http://" + addr
	m1 := e.Member(3)
	tok := e.Issue(t, secret, m1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := servertest.Get(t, gw, tok, "/api/members/"+m1+"/profile")
		if st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standalone gateway never allowed an issued token (last %d)", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	k, _, _ := e.S.Keys.Signer(ctx)
	forged := e.Forge(t, m1, "forged-2")
	if st, reason := servertest.Get(t, gw, forged, "/api/members/"+m1+"/profile"); st != 401 || reason != string(event.ReasonNotIssued) {
		t.Fatalf("forged via standalone gateway: %d %q", st, reason)
	}
	// The refusal reaches the authority as an access event and raises the
	// not_issued alert there.
	waitEvent(t, arrived, func(ev event.Access) bool {
		return ev.Gateway == "edge-standalone" && ev.Reason == event.ReasonNotIssued && ev.Token.JTI == "forged-2" && ev.Reported == ""
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		found := false
		for _, a := range e.S.Detect.Alerts() {
			found = found || a.Rule == "not_issued"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no not_issued alert at the authority for a refusal at the standalone gateway")
		}
	}
	if err := e.S.Keys.Revoke(ctx, k.KID, "test", "custodian left"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for {
		st, reason := servertest.Get(t, gw, tok, "/api/members/"+m1+"/profile")
		if st == 401 && reason == string(event.ReasonRevokedKey) {
			break
		}
		if time.Since(revokedAt) > 5*time.Second {
			t.Fatalf("key revocation did not reach the standalone gateway within 5 s (%d %q)", st, reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("key revocation reached the standalone gateway in %s", time.Since(revokedAt).Round(time.Millisecond))

	// The last request before a graceful stop is not lost.
	if st, _ := servertest.Get(t, gw, tok, "/api/members/"+m1+"/addresses"); st != 401 {
		t.Fatalf("revoked key after stop request: %d", st)
	}
	cancel()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("gateway stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop")
	}
	waitEvent(t, arrived, func(ev event.Access) bool {
		return ev.Gateway == "edge-standalone" && strings.HasSuffix(ev.Path, "/addresses")
	})
}

// waitEvent reads sub until an event matches, for up to five seconds.
func waitEvent(t *testing.T, sub *event.Subscription, match func(event.Access) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-sub.C:
			for _, ev := range b {
				if match(ev) {
					return
				}
			}
		case <-deadline:
			t.Fatal("expected access event did not arrive at the authority")
		}
	}
}

// A second start reuses the keyring; a wrong KEK or a damaged keyring stops
// start-up instead of making new keys.
func TestRestartAndBadKeyring(t *testing.T) {
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	s, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	k1, _, err := s.Keys.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = server.Open(ctx, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.FirstStart {
		t.Fatal("second start treated as first")
	}
	k2, _, _ := s.Keys.Signer(ctx)
	s.Close()
	if k1.KID != k2.KID {
		t.Fatalf("restart changed the signing key %s → %s", k1.KID, k2.KID)
	}
	ring := filepath.Join(cfg.Data, server.KeyringFile)
	orig, _ := os.ReadFile(ring)
	bad := append([]byte(nil), orig...)
	bad[len(bad)-5] ^= 1
	os.WriteFile(ring, bad, 0o600)
	if _, err := server.Open(ctx, cfg, log, nil); err == nil || !strings.Contains(err.Error(), "keyring") {
		t.Fatalf("damaged keyring: %v", err)
	}
	after, _ := os.ReadFile(ring)
	if string(after) != string(bad) {
		t.Fatal("start-up rewrote a damaged keyring")
	}
	os.WriteFile(ring, orig, 0o600)
	os.WriteFile(filepath.Join(cfg.Data, server.KEKFile), []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o600)
	if _, err := server.Open(ctx, cfg, log, nil); err == nil {
		t.Fatal("wrong KEK accepted")
	}
	_ = keys.Active
}

func authorityRequest(sub string) authority.Request {
	return authority.Request{Subject: sub, Audience: config.DefaultAudience}
}

// What happens is in the audit log: key changes, client changes, access
// digests and alerts, and the log verifies against its signed checkpoint.
// An incident can place an evidence hold.
func TestAuditTrail(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	secret := e.Client(t)
	m := e.Member(9)
	tok := e.Issue(t, secret, m)
	e.Get(t, tok, "/api/members/"+m+"/profile")
	forged := e.Forge(t, m, "forged-audit")
	e.Get(t, forged, "/api/members/"+m+"/profile")
	if err := e.API.Do(ctx, "POST", "/v1/keys/rotate", map[string]string{"reason": "test"}, nil); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.Cfg.Data, server.AuditDir)
	vkey, err := os.ReadFile(filepath.Join(dir, "vkey"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"keys.rotate", "client.add", audit.KindDigest, "alert"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := audit.Verify(ctx, dir, v, nil)
		missing := ""
		for _, kind := range want {
			if err == nil && res.Kinds[kind] == 0 {
				missing = kind
			}
		}
		if err == nil && missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: err %v, missing kind %q (have %v)", err, missing, res.Kinds)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var incidents struct {
		Incidents []struct {
			ID string `json:"id"`
		} `json:"incidents"`
	}
	if err := e.API.Do(ctx, "GET", "/v1/incidents", nil, &incidents); err != nil || len(incidents.Incidents) == 0 {
		t.Fatalf("incidents: %v %+v", err, incidents)
	}
	id := incidents.Incidents[0].ID
	if err := e.API.Do(ctx, "POST", "/v1/incidents/"+id+"/hold", map[string]string{"reason": "regulator"}, nil); err != nil {
		t.Fatal(err)
	}
	holds, _ := e.S.Audit.Holds()
	if len(holds) != 1 || holds[0].ID != "incident:"+id {
		t.Fatalf("holds %+v", holds)
	}
	if err := e.API.Do(ctx, "POST", "/v1/incidents/nope/hold", map[string]string{"reason": "x"}, nil); err == nil {
		t.Fatal("hold on an unknown incident accepted")
	}
}

// Detection in the server: a forged token raises not_issued; the issued one
// raises nothing.
func TestDetectionWired(t *testing.T) {
	e := start(t)
	secret := e.Client(t)
	m := e.Member(11)
	tok := e.Issue(t, secret, m)
	e.Get(t, tok, "/api/members/"+m+"/orders")
	forged := e.Forge(t, m, "never-logged-in")
	e.Get(t, forged, "/api/members/"+m+"/orders")
	deadline := time.Now().Add(5 * time.Second)
	for {
		rules := map[string]int{}
		for _, a := range e.S.Detect.Alerts() {
			rules[a.Rule]++
			if a.Attrs["jti"] != "" && a.Attrs["jti"] != "never-logged-in" {
				t.Fatalf("alert %s on the issued token", a.Rule)
			}
		}
		if rules["not_issued"] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts %v, want not_issued", rules)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
