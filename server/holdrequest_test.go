package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
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
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/server"
)

func TestParseHoldRequest(t *testing.T) {
	good := []struct{ body, action, target, dur string }{
		{`{"action":"block_source","target":"203.0.113.0/24","for":"1h","reason":"incident 7"}`, "block_source", "203.0.113.0/24", "1h0m0s"},
		{`{"action":"block_source","target":"203.0.113.77/24","for":"1h","reason":"x"}`, "block_source", "203.0.113.0/24", "1h0m0s"},
		{`{"action":"block_source","target":"198.51.100.7","for":"90s","reason":"x"}`, "block_source", "198.51.100.7/32", "1m30s"},
		{`{"action":"block_source","target":"2001:db8::1","for":"1h","reason":"x"}`, "block_source", "2001:db8::1/128", "1h0m0s"},
		{`{"action":"block_source","target":"2001:db8::/32","for":"1h","reason":"x"}`, "block_source", "2001:db8::/32", "1h0m0s"},
		{`{"action":"block_source","target":"10.0.0.0/8","for":"168h","reason":"x"}`, "block_source", "10.0.0.0/8", "168h0m0s"},
		{`{"action":"block_source","target":"::ffff:203.0.113.0/120","for":"1h","reason":"x"}`, "block_source", "203.0.113.0/24", "1h0m0s"},
		{`{"action":"block_country","target":"CN","for":"24h","reason":"foreign replay"}`, "block_country", "CN", "24h0m0s"},
		{`{"action":"block_country","target":"us","for":"1m","reason":"x"}`, "block_country", "US", "1m0s"},
		{`{"action":"block_country","target":"KR","for":"1h","reason":"x"}`, "block_country", "KR", "1h0m0s"}, // the allowed set is the handler's check
	}
	for _, c := range good {
		action, target, dur, reason, err := server.ParseHoldRequest([]byte(c.body))
		if err != nil || action != c.action || target != c.target || dur.String() != c.dur || reason == "" {
			t.Errorf("%s: %q %q %s %q %v", c.body, action, target, dur, reason, err)
		}
	}
	bad := []string{
		``, `null`, `[]`, `{`, `"x"`,
		`{"action":"block_source","target":"203.0.113.0/24","for":"1h","reason":"x"} {}`,
		`{"action":"block_source","target":"203.0.113.0/24","for":"1h","reason":"x","extra":1}`,
		`{"action":"block_source","target":"203.0.113.0/24","for":"1h","reason":"x","Reason":"y"}`,
		`{"action":"unblock","target":"203.0.113.0/24","for":"1h","reason":"x"}`,
		`{"action":"","target":"203.0.113.0/24","for":"1h","reason":"x"}`,
		`{"action":"Block_Source","target":"203.0.113.0/24","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"203.0.113.0/33","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"203.0.113","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"fe80::1%eth0","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"0.0.0.0/0","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"10.0.0.0/7","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"::/0","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"2001:db8::/31","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"::ffff:0.0.0.0/96","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"::ffff:0:0/64","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"ZZ","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"UK","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"EU","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"CHN","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"156","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"C","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"203.0.113.0/24","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"CN","for":"1h","reason":"x"}`,
		`{"action":"block_country","target":"CN","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"0s","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"-1h","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"169h","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"1d","reason":"x"}`,
		`{"action":"block_country","target":"CN","for":3600,"reason":"x"}`,
		`{"action":"block_country","target":"CN","for":"1h"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"   "}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"line\nforged log line"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"\u202eevil"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"\u0085next"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"` + strings.Repeat("r", server.MaxHoldReason+1) + `"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"` + strings.Repeat("r", 5000) + `"}`,
	}
	for _, b := range bad {
		if action, target, dur, _, err := server.ParseHoldRequest([]byte(b)); !errors.Is(err, server.ErrBadHoldRequest) {
			t.Errorf("%.80s: accepted as %q %q %s (%v)", b, action, target, dur, err)
		}
	}
}

// FuzzParseHoldRequest: whatever the body, a request is either refused as
// ErrBadHoldRequest or gives a hold every gateway parses, within the bounds,
// and parsing the normalised request again gives the same hold.
func FuzzParseHoldRequest(f *testing.F) {
	for _, s := range []string{
		`{"action":"block_source","target":"203.0.113.0/24","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"::ffff:203.0.113.9","for":"1h","reason":"x"}`,
		`{"action":"block_source","target":"2001:db8::/48","for":"10m","reason":"x"}`,
		`{"action":"block_country","target":"cn","for":"168h","reason":"é"}`,
		`{"action":"block_country","target":"CN","for":"1h","reason":"x","x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		action, target, dur, reason, err := server.ParseHoldRequest(b)
		if err != nil {
			if !errors.Is(err, server.ErrBadHoldRequest) {
				t.Fatalf("error %v is not ErrBadHoldRequest", err)
			}
			return
		}
		if dur <= 0 || dur > server.MaxHoldFor || strings.TrimSpace(reason) == "" || len(reason) > server.MaxHoldReason || !utf8.ValidString(reason) ||
			strings.ContainsFunc(reason, func(c rune) bool { return unicode.IsControl(c) || unicode.Is(unicode.Cf, c) }) {
			t.Fatalf("out of bounds: %s %q", dur, reason)
		}
		h := gateway.Hold{ID: "op-1", Action: action, Target: target, Until: time.Now().Add(dur), Reason: reason}
		line, _ := json.Marshal(h)
		got, err := gateway.ParseHold(line)
		if err != nil {
			t.Fatalf("a gateway refuses the hold %s: %v", line, err)
		}
		if action == gateway.HoldBlockSource {
			p, _ := got.Prefix()
			if p != p.Masked() || (p.Addr().Is4() && p.Bits() < server.MinHoldBits4) || (!p.Addr().Is4() && p.Bits() < server.MinHoldBits6) || p.Addr().Is4In6() {
				t.Fatalf("prefix %s not normalised or too broad", p)
			}
		}
		again, _ := json.Marshal(server.HoldRequest{Action: action, Target: target, For: dur.String(), Reason: reason})
		a2, t2, d2, r2, err := server.ParseHoldRequest(again)
		if err != nil || a2 != action || t2 != target || d2 != dur || r2 != reason {
			t.Fatalf("not stable: %s → %q %q %s %q %v", again, a2, t2, d2, r2, err)
		}
	})
}

// An operator's hold by hand: admin credentials only; refused with
// invalid_request or allowed_country without a trace; placed, it is in
// the store, the audit log and the in-process gateway, attributed to the
// admin credential; a store that cannot keep it is 503.
func TestHoldByHand(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.AllowedCountries = []string{"KR", "JP"} })
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
	post := func(bearer string, body any) (gateway.Hold, error) {
		var h gateway.Hold
		err := e.API.DoAuth(ctx, "POST", "/v1/containment", bearer, body, &h)
		return h, err
	}
	code := func(err error) (int, string) {
		var ae *api.Error
		if !errors.As(err, &ae) {
			return 0, ""
		}
		return ae.Status, ae.Code
	}
	cn := map[string]string{"action": "block_country", "target": "CN", "for": "1h", "reason": "replayed tokens from CN"}
	if st, c := code(func() error { _, err := post(gw.Token, cn); return err }()); st != http.StatusForbidden || c != "insufficient_scope" {
		t.Fatalf("gateway credential: %d %s", st, c)
	}
	if st, _ := code(func() error { _, err := post("", cn); return err }()); st != http.StatusUnauthorized {
		t.Fatalf("no credential: %d", st)
	}
	for _, b := range []any{
		"not an object",
		map[string]string{"action": "block_all", "target": "CN", "for": "1h", "reason": "x"},
		map[string]string{"action": "block_country", "target": "XX", "for": "1h", "reason": "x"},
		map[string]string{"action": "block_country", "target": "CN", "for": "8d", "reason": "x"},
		map[string]string{"action": "block_country", "target": "CN", "for": "1h"},
		map[string]string{"action": "block_source", "target": "0.0.0.0/0", "for": "1h", "reason": "x"},
		map[string]string{"action": "block_source", "target": "300.1.1.1", "for": "1h", "reason": "x"},
	} {
		if st, c := code(func() error { _, err := post(oncall.Token, b); return err }()); st != http.StatusBadRequest || c != "invalid_request" {
			t.Errorf("%v: %d %s, want 400 invalid_request", b, st, c)
		}
	}
	for _, cc := range []string{"KR", "jp"} {
		b := map[string]string{"action": "block_country", "target": cc, "for": "1h", "reason": "x"}
		if st, c := code(func() error { _, err := post(oncall.Token, b); return err }()); st != http.StatusBadRequest || c != "allowed_country" {
			t.Errorf("%s: %d %s, want 400 allowed_country", cc, st, c)
		}
	}
	if hs, _ := e.S.Holds(ctx); len(hs) != 0 {
		t.Fatalf("refused requests left holds %+v", hs)
	}

	before := time.Now()
	h, err := post(oncall.Token, cn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.ID, "op-") || h.Action != "block_country" || h.Target != "CN" || h.Actor != "credential:oncall" ||
		h.Reason != cn["reason"] || h.Until.Sub(before) < time.Hour-time.Second || h.Until.Sub(before) > time.Hour+5*time.Second {
		t.Fatalf("hold %+v", h)
	}
	var list struct {
		Holds []gateway.Hold `json:"holds"`
	}
	if err := e.API.Do(ctx, "GET", "/v1/containment", nil, &list); err != nil || len(list.Holds) != 1 || list.Holds[0].ID != h.ID || list.Holds[0].Actor != h.Actor {
		t.Fatalf("listed %+v %v", list.Holds, err)
	}
	if bs := e.S.Gateway.CountryBlocks(); len(bs) != 1 || bs[0].Country != "CN" {
		t.Fatalf("in-process gateway country blocks %+v", bs)
	}

	// A source hold by hand takes effect at the in-process gateway.
	secret := e.Client(t)
	m := e.Member(3)
	tok := e.Issue(t, secret, m)
	if st, _ := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("before the hold: %d", st)
	}
	src, err := post(oncall.Token, map[string]string{"action": "block_source", "target": "127.0.0.1", "for": "10m", "reason": "insider host"})
	if err != nil || src.Target != "127.0.0.1/32" {
		t.Fatalf("source hold %+v %v", src, err)
	}
	if st, reason := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 401 || reason != string(event.ReasonBlockedSource) {
		t.Fatalf("after the source hold: %d %s", st, reason)
	}

	// Both are in the audit log, journaled as detection's holds are.
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
		if err == nil && res.Kinds["containment.block_country"] == 1 && res.Kinds["containment.block_source"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: %v %v", err, res.Kinds)
		}
	}

	// A store that cannot keep the hold: 503, nothing claimed.
	if _, err := e.S.DB.ExecContext(ctx, `DROP TABLE containment_holds`); err != nil {
		t.Fatal(err)
	}
	if st, c := code(func() error { _, err := post(oncall.Token, cn); return err }()); st != http.StatusServiceUnavailable || c != "containment_failed" {
		t.Fatalf("store gone: %d %s, want 503 containment_failed", st, c)
	}
}

// A detector action that can never succeed ends failed at once instead of
// being retried: a country hold on an allowed country (the authority's
// configuration may allow a country the detector's does not), and a hold
// whose target does not parse. A store that is down is retried.
func TestQueuedHomeCountryHoldIsPermanent(t *testing.T) {
	e := startWith(t, func(c *config.Config) { c.Detect.Contain = true })
	ctx := context.Background()
	c := e.S.Containment().(detect.RecordedContainment)
	r := detect.ActionRecord{ID: "act-al-1-block_country", Time: time.Now(), Action: detect.ActionBlockCountry, Target: "KR",
		Until: time.Now().Add(time.Hour), Rule: detect.RuleForeignSpread, AlertID: "al-1", Reason: "custos alert al-1",
		Evidence: map[string]string{"rule": detect.RuleForeignSpread, "country": "KR"}}
	err := c.Carry(ctx, r)
	if !errors.Is(err, server.ErrHomeCountry) || !server.Permanent(err) {
		t.Fatalf("home-country hold: %v, permanent %v", err, server.Permanent(err))
	}
	r.ID, r.Target = "act-al-2-block_country", "Korea"
	if err := c.Carry(ctx, r); err == nil || !server.Permanent(err) {
		t.Fatalf("unparsable country: %v, permanent %v", err, server.Permanent(err))
	}
	e.S.DB.Close()
	r.ID, r.Target = "act-al-3-block_country", "US"
	if err := c.Carry(ctx, r); err == nil || server.Permanent(err) {
		t.Fatalf("store down: %v, permanent %v (want retried)", err, server.Permanent(err))
	}
}
