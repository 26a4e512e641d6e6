package server_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/server"
)

func TestParseReleaseRequest(t *testing.T) {
	for q, want := range map[string]string{
		"reason=false+alarm":                                  "false alarm",
		"reason=%ED%95%9C%EA%B5%AD":                           "한국",
		"reason=" + strings.Repeat("x", server.MaxHoldReason): strings.Repeat("x", server.MaxHoldReason),
	} {
		got, err := server.ParseReleaseRequest(q)
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", q, got, err, want)
		}
	}
	for _, q := range []string{
		"", "reason=", "reason=+++", "reason=a&reason=b", "reason=x&for=1h", "why=x", "reason=%zz",
		"reason=a%0Ab", "reason=a%E2%80%AEb", "reason=%FF", "reason=" + strings.Repeat("x", server.MaxHoldReason+1),
		"reason=x;y=1",
	} {
		if got, err := server.ParseReleaseRequest(q); !errors.Is(err, server.ErrBadHoldRequest) {
			t.Errorf("%q accepted as %q (%v)", q, got, err)
		}
	}
}

func FuzzParseReleaseRequest(f *testing.F) {
	for _, s := range []string{"reason=x", "reason=a&reason=b", "reason=%E2%80%AE", "reason=x&y=", "a=b;c", "reason=%ED%95%9C"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		reason, err := server.ParseReleaseRequest(q)
		if err != nil {
			if !errors.Is(err, server.ErrBadHoldRequest) {
				t.Fatalf("error %v is not ErrBadHoldRequest", err)
			}
			return
		}
		if strings.TrimSpace(reason) == "" || len(reason) > server.MaxHoldReason || !utf8.ValidString(reason) ||
			strings.ContainsFunc(reason, func(c rune) bool { return unicode.IsControl(c) || unicode.Is(unicode.Cf, c) }) {
			t.Fatalf("out of bounds: %q", reason)
		}
		again, err := server.ParseReleaseRequest(url.Values{"reason": {reason}}.Encode())
		if err != nil || again != reason {
			t.Fatalf("not stable: %q → %q %v", reason, again, err)
		}
	})
}

// An operator lifts a hold by hand: admin credentials only; a malformed
// request is 400 and lifts nothing; an unknown or already released hold is
// 404; released, the hold is gone from the store's listing and the
// in-process gateway, journaled with its actor and reason, while another
// hold on the same country stays; a store that cannot record it is 503.
func TestReleaseByHand(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	var oncall, gw struct {
		Token string `json:"token"`
	}
	if err := e.API.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "oncall", "role": "admin"}, &oncall); err != nil {
		t.Fatal(err)
	}
	if err := e.API.Do(ctx, "POST", "/v1/credentials", map[string]string{"name": "gw", "role": "gateway"}, &gw); err != nil {
		t.Fatal(err)
	}
	code := func(err error) (int, string) {
		var ae *api.Error
		if !errors.As(err, &ae) {
			return 0, ""
		}
		return ae.Status, ae.Code
	}
	hold := func(body map[string]string) gateway.Hold {
		t.Helper()
		var h gateway.Hold
		if err := e.API.DoAuth(ctx, "POST", "/v1/containment", oncall.Token, body, &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	release := func(bearer, id, query string, body any) (gateway.Release, error) {
		var r gateway.Release
		err := e.API.DoAuth(ctx, "DELETE", "/v1/containment/"+id+query, bearer, body, &r)
		return r, err
	}
	listed := func() map[string]bool {
		t.Helper()
		var list struct {
			Holds []gateway.Hold `json:"holds"`
		}
		if err := e.API.Do(ctx, "GET", "/v1/containment", nil, &list); err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, h := range list.Holds {
			m[h.ID] = true
		}
		return m
	}

	long := hold(map[string]string{"action": "block_country", "target": "CN", "for": "2h", "reason": "detection said so"})
	short := hold(map[string]string{"action": "block_country", "target": "CN", "for": "1h", "reason": "and the operator too"})
	src := hold(map[string]string{"action": "block_source", "target": "127.0.0.1", "for": "10m", "reason": "a false alarm"})
	why := "?reason=" + url.QueryEscape("our own office")

	if st, c := code(func() error { _, err := release(gw.Token, src.ID, why, nil); return err }()); st != http.StatusForbidden || c != "insufficient_scope" {
		t.Fatalf("gateway credential: %d %s", st, c)
	}
	if st, _ := code(func() error { _, err := release("", src.ID, why, nil); return err }()); st != http.StatusUnauthorized {
		t.Fatalf("no credential: %d", st)
	}
	for _, q := range []string{"", "?reason=", "?reason=a&reason=b", "?reason=x&for=1h", "?reason=a%0Ab"} {
		if st, c := code(func() error { _, err := release(oncall.Token, src.ID, q, nil); return err }()); st != http.StatusBadRequest || c != "invalid_request" {
			t.Errorf("query %q: %d %s, want 400 invalid_request", q, st, c)
		}
	}
	if st, c := code(func() error {
		_, err := release(oncall.Token, src.ID, why, map[string]string{"reason": "x"})
		return err
	}()); st != http.StatusBadRequest || c != "invalid_request" {
		t.Errorf("with a body: %d %s, want 400 invalid_request", st, c)
	}
	if st, c := code(func() error { _, err := release(oncall.Token, "op-0000000000000000", why, nil); return err }()); st != http.StatusNotFound || c != "not_found" {
		t.Errorf("unknown hold: %d %s, want 404 not_found", st, c)
	}
	if l := listed(); len(l) != 3 {
		t.Fatalf("refused releases lifted holds: %v", l)
	}

	// The source hold blocks; released, the source is served again.
	secret := e.Client(t)
	m := e.Member(3)
	tok := e.Issue(t, secret, m)
	if st, reason := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 401 || reason != string(event.ReasonBlockedSource) {
		t.Fatalf("under the source hold: %d %s", st, reason)
	}
	rel, err := release(oncall.Token, src.ID, why, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rel.ID != src.ID || rel.Target != "127.0.0.1/32" || rel.Actor != "credential:oncall" || rel.Reason != "our own office" || !rel.Until.Equal(src.Until) {
		t.Fatalf("release %+v", rel)
	}
	if st, _ := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("after the release: %d", st)
	}
	if l := listed(); l[src.ID] || !l[long.ID] || !l[short.ID] {
		t.Fatalf("listed after the release: %v", l)
	}
	if st, c := code(func() error { _, err := release(oncall.Token, src.ID, why, nil); return err }()); st != http.StatusNotFound || c != "not_found" {
		t.Errorf("released twice: %d %s, want 404 not_found", st, c)
	}

	// A retry placing the released hold again (a queued detector action
	// whose announcement had failed) places nothing: the stream's next line
	// is the next hold.
	req, _ := http.NewRequestWithContext(ctx, "GET", e.API.Base+"/v1/containment/stream", nil)
	req.Header.Set("Authorization", "Bearer "+oncall.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() && len(lines.Bytes()) > 0 { // the snapshot
	}
	if err := server.AddHold(e.S, ctx, src); err != nil {
		t.Fatal(err)
	}
	next := hold(map[string]string{"action": "block_source", "target": "192.0.2.1", "for": "10m", "reason": "the next one"})
	for lines.Scan() {
		if len(lines.Bytes()) == 0 {
			continue
		}
		if got, err := gateway.ParseHold(lines.Bytes()); err != nil || got.ID != next.ID {
			t.Fatalf("after re-placing a released hold the stream sent %s (%v), want %s", lines.Bytes(), err, next.ID)
		}
		break
	}
	if l := listed(); l[src.ID] {
		t.Fatal("a released hold placed again is listed")
	}
	if _, err := release(oncall.Token, next.ID, why, nil); err != nil {
		t.Fatal(err)
	}

	// Releasing the later of two holds on CN leaves the other in force,
	// with its own end.
	if _, err := release(oncall.Token, long.ID, why, nil); err != nil {
		t.Fatal(err)
	}
	if bs := e.S.Gateway.CountryBlocks(); len(bs) != 1 || bs[0].Country != "CN" || !bs[0].Until.Equal(short.Until) {
		t.Fatalf("after releasing one of two CN holds: %+v (want until %s)", bs, short.Until)
	}
	if _, err := release(oncall.Token, short.ID, why, nil); err != nil {
		t.Fatal(err)
	}
	if bs := e.S.Gateway.CountryBlocks(); len(bs) != 0 {
		t.Fatalf("after releasing both CN holds: %+v", bs)
	}
	if hs, _ := e.S.Holds(ctx); len(hs) != 0 {
		t.Fatalf("store still lists %+v", hs)
	}

	// Each release is in the audit log with its actor and reason.
	dir := filepath.Join(e.Cfg.Data, server.AuditDir)
	vkey, err := os.ReadFile(filepath.Join(dir, "vkey"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		res, err := audit.Verify(ctx, dir, v, nil)
		if err == nil && res.Kinds["containment.release"] == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: %v %v", err, res.Kinds)
		}
	}

	var found bool
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if b, rerr := os.ReadFile(p); err == nil && rerr == nil && !d.IsDir() {
			found = found || strings.Contains(string(b), `"actor":"credential:oncall"`) && strings.Contains(string(b), `"reason":"our own office"`) &&
				strings.Contains(string(b), `"id":"`+src.ID+`"`)
		}
		return nil
	})
	if !found {
		t.Fatal("no journaled release names its actor, reason and hold")
	}

	// A store that cannot record the release: 503, the hold stays.
	again := hold(map[string]string{"action": "block_country", "target": "RU", "for": "1h", "reason": "x"})
	refuse := `CREATE TRIGGER no_release BEFORE UPDATE ON containment_holds BEGIN SELECT RAISE(ABORT, 'read-only'); END`
	if e.S.DB.Dialect == "postgres" {
		refuse = `ALTER TABLE containment_holds ADD CONSTRAINT no_release CHECK (released_ns IS NULL)`
	}
	if _, err := e.S.DB.ExecContext(ctx, refuse); err != nil {
		t.Fatal(err)
	}
	if st, c := code(func() error { _, err := release(oncall.Token, again.ID, why, nil); return err }()); st != http.StatusServiceUnavailable || c != "containment_failed" {
		t.Fatalf("store gone: %d %s, want 503 containment_failed", st, c)
	}
	if bs := e.S.Gateway.CountryBlocks(); len(bs) != 1 || bs[0].Country != "RU" {
		t.Fatalf("a release not recorded lifted the hold: %+v", bs)
	}
	if hs, _ := e.S.Holds(ctx); len(hs) != 1 || hs[0].ID != again.ID {
		t.Fatalf("a release not recorded: the store lists %+v", hs)
	}
}
