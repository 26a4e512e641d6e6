package sim

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/internal/geodb"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/sim/scenario"
	"github.com/custos-dev/custos/token"
)

// HTTPOptions configure the HTTP-mode replay.
type HTTPOptions struct {
	Scenario scenario.Config
	// Data is custos's data directory; a fresh temp dir when empty.
	Data string
	// Listen and GatewayListen are the API and gateway addresses (loopback,
	// a free port when empty).
	Listen, GatewayListen string
	// Workers is how many requests are in flight at once (default 8).
	Workers int
	Log     *slog.Logger
	// KeyCopied: the custodian's departure never reaches the key he copied
	// (it stays live, as if custody had been breached too, and is copied
	// again when the schedule rotates it out); only the gateway's provenance
	// check (not_issued) and detection stand in the way.
	KeyCopied bool
	// Observe runs the gateway's provenance check (not_issued) in observe
	// mode: forged tokens pass, detection sees them.
	Observe bool
	// Contain turns on detect.contain: the server's containment policies
	// (not_issued revokes the key, foreign_origin blocks the source,
	// foreign_spread the country, issuance alerts suspend the client).
	// Containment time is then read from the gateway's answers.
	Contain bool
	// Name names the custos world in the report (default "custos (http)").
	Name string
	// NoBaseline leaves out the signature-only gateway (another world's
	// replay of the same stream has it).
	NoBaseline bool
	// NoLifecycle: the custodian is not made a custodian of the key, so his
	// departure does not reach it; he copies the active key as he leaves,
	// and only the server's rotation schedule kills it (rotated out within
	// RotateEvery, retired MaxTokenTTL + RetireLeeway later). The server
	// then runs on the replay's simulated clock, and the replay applies the
	// key schedule (keys.Manager.Tick) every schedStep of simulated time.
	NoLifecycle bool

	// direct sends token requests without X-Forwarded-For: the authority
	// then sees every caller as the replay's own loopback address.
	direct bool
}

// HTTPWorld maps an events-mode world to the HTTP replay's options; the
// world HTTP mode cannot replay (DPoP) is an error.
func HTTPWorld(o CustosOptions) (HTTPOptions, error) {
	if o.DPoP {
		return HTTPOptions{}, fmt.Errorf("world %q is not replayed in http mode", o.Name)
	}
	return HTTPOptions{Name: o.Name + " (http)", KeyCopied: o.KeyStolenAnyway, Observe: o.Observe, Contain: o.Contain, NoLifecycle: o.NoLifecycle}, nil
}

// schedStep is how often, in simulated time, the no-lifecycle world applies
// the server's key schedule: the server's own schedule loop runs every ten
// seconds of wall time, hours or days of simulated time.
const schedStep = 5 * time.Minute

// keyLead is how long before the custodian's departure the no-lifecycle
// world's server starts, with the key he copies.
const keyLead = time.Minute

// tokenStep is how long, in simulated time, the no-lifecycle world uses a
// token before getting a new one: under the forged tokens' lifetime (10
// minutes) and the issued ones' (15).
const tokenStep = 5 * time.Minute

// HTTPReplay is custos serving the sample shop over loopback HTTP, with the
// breach replayed through it and through a signature-only gateway.
type HTTPReplay struct {
	Server                      *server.Server
	APIURL, GatewayURL, ShopURL string
	BaselineURL                 string
	Data                        string

	opts      HTTPOptions
	sc        *scenario.Scenario
	custody   *leakyCustody
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan error
	servers   []*http.Server
	ownData   bool
	secret    string // the login service's secret (a new one after a suspension)
	stolenSec string // the secret the attacker holds
	secretMu  sync.Mutex
	clientID  string
	scimTok   string
	stolenMu  sync.Mutex
	stolen    crypto.Signer
	stolenK   keys.Key
	stolenAll []string // every key the attacker held
	custodian string
	report    Report

	simNow atomic.Int64 // unix nanos of the request being replayed
	// lastSched is when (simulated) the no-lifecycle world last applied
	// the key schedule; cw is custos's world of the last run.
	lastSched time.Time
	cw        *httpWorld
	falseAl   atomic.Int64
	// alertMu guards the first alert and the first behaviour alert (see
	// behaviourRule), each with its rule.
	alertMu                 sync.Mutex
	firstAlert, firstBhv    int64
	firstRule, firstBhvRule string
	attackNets              []scenario.Network
	firstUse                sync.Map // jti → unix nanos of the first request that used it
	attackJTI               sync.Map // jti of every token issued for the attacker (stolen client secret)
	// asked is, by "client_ip subject", when (simulated, unix nanos) the
	// attacker asked for a token with the stolen secret: the authority's
	// issuance alerts arrive before the answer names the token's jti.
	asked      sync.Map
	falseRules sync.Map
	// gwSent counts requests sent to custos's gateway, and catchUp is set
	// when an attack request was served with containment on: the driver
	// then lets detection catch up before the next request (see Run).
	gwSent  atomic.Uint64
	catchUp atomic.Bool
}

func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return net.Listen("tcp", addr)
}

// StartHTTP starts the sample shop, custos (authority and in-process
// gateway) and the signature-only baseline gateway on loopback.
func StartHTTP(ctx context.Context, o HTTPOptions) (_ *HTTPReplay, err error) {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sc, err := scenario.New(o.Scenario)
	if err != nil {
		return nil, err
	}
	h := &HTTPReplay{opts: o, sc: sc, custody: newLeakyCustody(), done: make(chan error, 1)}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if o.Data == "" {
		if o.Data, err = os.MkdirTemp("", "custos-replay-"); err != nil {
			return nil, err
		}
		h.ownData = true
	}
	h.Data = o.Data

	pop := sc.Population()
	sh, err := shop.New(pop)
	if err != nil {
		return nil, err
	}
	shopLn, err := listen("")
	if err != nil {
		return nil, err
	}
	h.ShopURL = "http://" + shopLn.Addr().String()
	h.serve(sh, shopLn)

	geo, err := writeGeoDB(filepath.Join(o.Data, "replay-geo.mmdb"), sc.Networks())
	if err != nil {
		return nil, err
	}
	for _, n := range sc.Networks() {
		if n.Attacker {
			h.attackNets = append(h.attackNets, n)
		}
	}

	apiLn, err := listen(o.Listen)
	if err != nil {
		return nil, err
	}
	gwLn, err := listen(o.GatewayListen)
	if err != nil {
		apiLn.Close()
		return nil, err
	}
	cfg := config.Default()
	cfg.Data = filepath.Join(o.Data, "custos")
	cfg.Issuer = "http://" + apiLn.Addr().String()
	shop.Configure(&cfg, pop, h.ShopURL)
	cfg.Gateway.Name = "custos-gw"
	cfg.Gateway.GeoIP = []string{geo}
	cfg.Gateway.TrustedProxies = []string{"127.0.0.1/32"} // the replay driver speaks for the simulated clients
	// The authority believes the driver too: each token request names,
	// in X-Forwarded-For, the machine that asks for the token (the login
	// service's servers, or the attacker's own with a stolen secret).
	cfg.TrustedProxies = []string{"127.0.0.1/32"}
	if o.Observe {
		cfg.Gateway.Observe = append(cfg.Gateway.Observe, string(event.ReasonNotIssued))
	}
	cfg.Detect.Contain = o.Contain
	var now func() time.Time // the wall clock
	if o.NoLifecycle {
		// Simulated time from just before the custodian's departure: the
		// key he copies as he leaves is the active key then.
		start := sc.Config().CustodianLeaves.Add(-keyLead)
		h.simNow.Store(start.UnixNano())
		h.lastSched = start
		now = h.simTime
	}
	s, err := server.OpenWith(ctx, cfg, o.Log, now, h.custody)
	if err != nil {
		apiLn.Close()
		gwLn.Close()
		return nil, err
	}
	h.Server = s
	h.APIURL, h.GatewayURL = cfg.Issuer, "http://"+gwLn.Addr().String()
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go func() { h.done <- s.Run(h.ctx, apiLn, gwLn) }()
	s.Detect.OnAlert(h.onAlert)

	// The breached design: a gateway that checks signatures and nothing else,
	// trusting every key it has ever seen.
	bl, err := newSigOnly(h.ShopURL, s.Keys, sc.Timeline().Revoked, h.simTime)
	if err != nil {
		return nil, err
	}
	blLn, err := listen("")
	if err != nil {
		return nil, err
	}
	h.BaselineURL = "http://" + blLn.Addr().String()
	h.serve(bl, blLn)

	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *HTTPReplay) serve(handler http.Handler, ln net.Listener) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	h.servers = append(h.servers, srv)
	go srv.Serve(ln)
}

func (h *HTTPReplay) simTime() time.Time { return time.Unix(0, h.simNow.Load()) }

// setup registers the login service, provisions the key custodian over SCIM
// and lets him copy the active signing key, as the attacker did.
func (h *HTTPReplay) setup(ctx context.Context) error {
	var cl struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := h.admin(ctx, "POST", "/v1/clients", map[string]any{"name": "login-service", "audience": []string{config.DefaultAudience}}, &cl); err != nil {
		return fmt.Errorf("failed to register the login service: %w", err)
	}
	h.secret, h.stolenSec, h.clientID = cl.Secret, cl.Secret, cl.ID
	var st struct {
		Token string `json:"token"`
	}
	if err := h.admin(ctx, "POST", "/v1/scim/tokens", map[string]string{"name": "idp"}, &st); err != nil {
		return fmt.Errorf("failed to make a SCIM token: %w", err)
	}
	h.scimTok = st.Token
	var user struct {
		ID string `json:"id"`
	}
	if err := h.call(ctx, "POST", h.APIURL+"/scim/v2/Users", h.scimTok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "auth-dev@shop.example",
		"name": map[string]string{"givenName": "Auth", "familyName": "Developer"}, "active": true,
	}, &user); err != nil {
		return fmt.Errorf("failed to provision the custodian: %w", err)
	}
	members := []map[string]string{{"value": user.ID}}
	if h.opts.NoLifecycle {
		members = []map[string]string{} // nobody links him to the key
	}
	if err := h.call(ctx, "POST", h.APIURL+"/scim/v2/Groups", h.scimTok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "auth-key-admins",
		"members": members,
	}, nil); err != nil {
		return fmt.Errorf("failed to make the key-admin group: %w", err)
	}
	h.custodian = user.ID
	k, _, err := h.Server.Keys.Signer(ctx)
	if err != nil {
		return err
	}
	if h.stolen, err = h.custody.steal(k.KID); err != nil {
		return err
	}
	h.stolenK = k
	h.stolenAll = []string{k.KID}
	return nil
}

// signer is the key the attacker signs with. He keeps the key he copied,
// but in a world where custody itself is breached (KeyCopied) he copies
// the active key again once the schedule rotates his out; a key revoked
// (by containment, or his custodian's departure) stays his last.
func (h *HTTPReplay) signer(ctx context.Context) (crypto.Signer, keys.Key, error) {
	h.stolenMu.Lock()
	defer h.stolenMu.Unlock()
	if h.opts.KeyCopied {
		cur, ok := h.Server.Keys.Lookup(h.stolenK.KID)
		if ok && cur.State != keys.Revoked && cur.State != keys.Active {
			k, _, err := h.Server.Keys.Signer(ctx)
			if err != nil {
				return nil, keys.Key{}, err
			}
			s, err := h.custody.steal(k.KID)
			if err != nil {
				return nil, keys.Key{}, err
			}
			h.stolen, h.stolenK = s, k
			h.stolenAll = append(h.stolenAll, k.KID)
		}
	}
	return h.stolen, h.stolenK, nil
}

// stolenKey reports whether kid is a key the attacker held.
func (h *HTTPReplay) stolenKey(kid string) bool {
	h.stolenMu.Lock()
	defer h.stolenMu.Unlock()
	return kid != "" && slices.Contains(h.stolenAll, kid)
}

func (h *HTTPReplay) admin(ctx context.Context, method, path string, body, out any) error {
	b, err := os.ReadFile(filepath.Join(h.Server.Config.Data, server.AdminTokenFile))
	if err != nil {
		return err
	}
	return h.call(ctx, method, h.APIURL+path, strings.TrimSpace(string(b)), body, out)
}

func (h *HTTPReplay) call(ctx context.Context, method, u, bearer string, body, out any) error {
	return h.callFrom(ctx, method, u, bearer, "", body, out)
}

// callFrom is call on behalf of the caller at address from (sent as
// X-Forwarded-For, which the authority believes from the replay's
// loopback address); none when from is empty.
func (h *HTTPReplay) callFrom(ctx context.Context, method, u, bearer, from string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.Contains(u, "/scim/") {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

var httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func (h *HTTPReplay) onAlert(a detect.Alert) {
	if len(a.Samples) == 0 && a.Attrs["src_ip"] == "" {
		return // raised by the lifecycle (a departure), not by traffic
	}
	attack := h.stolenKey(a.Attrs["kid"])
	if _, ok := h.attackJTI.Load(a.Attrs["jti"]); ok && a.Attrs["jti"] != "" {
		attack = true // an issuance alert on a token the attacker asked for
	}
	// src_ip is the request's source; for an issuance alert, client_ip is
	// the address the token was asked for (the attacker's, with a stolen
	// secret), since the alert is raised before its jti reaches attackJTI.
	for _, attr := range []string{"src_ip", "client_ip"} {
		ip, err := netipParse(a.Attrs[attr])
		if err != nil {
			continue
		}
		for _, n := range h.attackNets {
			if n.Prefix.Contains(ip) {
				attack = true
			}
		}
	}
	if !attack {
		h.falseAl.Add(1)
		h.falseRules.Store(a.Rule+" "+a.Entity, true)
		return
	}
	// The alert's time is the simulated time of the request that raised it,
	// found through its token (the token's issuance, for an issuance alert);
	// the driver has moved on by the time it arrives.
	at := h.simNow.Load()
	if v, ok := h.firstUse.Load(a.Attrs["jti"]); ok {
		at = v.(int64)
	} else if v, ok := h.attackJTI.Load(a.Attrs["jti"]); ok {
		at = v.(int64)
	} else if v, ok := h.asked.Load(a.Attrs["client_ip"] + " " + a.Attrs["subject"]); ok {
		at = v.(int64)
	}
	h.alertMu.Lock()
	defer h.alertMu.Unlock()
	if h.firstAlert == 0 || at < h.firstAlert {
		h.firstAlert, h.firstRule = at, a.Rule
	}
	if behaviourRule(a.Rule) && (h.firstBhv == 0 || at < h.firstBhv) {
		h.firstBhv, h.firstBhvRule = at, a.Rule
	}
}

// Run replays the scenario and returns the report. progress may be nil.
func (h *HTTPReplay) Run(ctx context.Context, progress func(done, expected uint64)) (Report, error) {
	tl := h.sc.Timeline()
	pop := h.sc.Population()
	name := h.opts.Name
	switch {
	case name != "":
	case h.opts.KeyCopied:
		name = "custos, key copied anyway (http)"
	default:
		name = "custos (http)"
	}
	cw := &httpWorld{name: name, exposure: NewExposure(pop)}
	h.cw = cw
	var bw *httpWorld
	if !h.opts.NoBaseline {
		bw = &httpWorld{name: "baseline (http)", exposure: NewExposure(pop)}
	}
	tokens := newTokenCache()
	departed := false
	var keyDied time.Time
	var wg sync.WaitGroup
	sem := make(chan struct{}, h.opts.Workers)
	var firstErr atomic.Pointer[error] // errors of several types: atomic.Value would panic
	expected := h.sc.Expected()
	var n uint64
	attackStarted := false
	for {
		var r scenario.Request
		if !h.sc.NextInto(&r) {
			break
		}
		n++
		if !departed && !h.opts.KeyCopied && !r.Time.Before(tl.CustodianLeaves) {
			wg.Wait() // the departure happens between requests, in order
			if h.opts.NoLifecycle {
				if err := h.advance(ctx, tl.CustodianLeaves); err != nil {
					return Report{}, err
				}
			}
			if err := h.depart(ctx); err != nil {
				return Report{}, err
			}
			departed = true
			if !h.opts.NoLifecycle {
				keyDied = tl.CustodianLeaves
			}
		}
		if h.catchUp.Load() {
			wg.Wait()
			h.awaitDetection(ctx)
		}
		if h.opts.NoLifecycle {
			if r.Time.Sub(h.simTime()) > time.Minute {
				// The clock jumps: the requests in flight finish
				// first, or their tokens would have expired.
				wg.Wait()
			}
			if err := h.advance(ctx, r.Time); err != nil {
				return Report{}, err
			}
		} else {
			h.simNow.Store(r.Time.UnixNano())
		}
		if err := ctx.Err(); err != nil {
			return Report{}, err
		}
		if e := firstErr.Load(); e != nil {
			return Report{}, *e
		}
		// The attack's first request goes alone, after every request before
		// it and before any after it, as it would on a wall clock: with
		// requests in flight side by side a later attack request could
		// reach detection first and time the first alert at itself.
		firstAttack := r.Kind.Attack() && !attackStarted
		if r.Kind.Attack() {
			attackStarted = true
		}
		if (h.opts.Contain && r.Kind.Attack()) || firstAttack {
			// With containment on an attack request goes alone, as in
			// events mode: what detection does about it takes effect
			// before the next one.
			wg.Wait()
			if err := h.replay(ctx, &r, tokens, cw, bw); err != nil {
				return Report{}, err
			}
			if h.catchUp.Load() {
				h.awaitDetection(ctx)
			}
		} else {
			sem <- struct{}{}
			wg.Add(1)
			go func(r scenario.Request) {
				defer func() { <-sem; wg.Done() }()
				if err := h.replay(ctx, &r, tokens, cw, bw); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}(r)
		}
		if progress != nil && n%512 == 0 {
			progress(n, expected)
		}
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return Report{}, *e
	}
	if progress != nil {
		progress(n, expected)
	}
	time.Sleep(300 * time.Millisecond) // let detection drain its queue
	if h.opts.NoLifecycle {
		// The key died when the schedule retired it (or anything revoked it).
		if k, ok := h.Server.Keys.Lookup(h.stolenK.KID); ok {
			switch {
			case k.RevokedAt != nil:
				keyDied = k.RevokedAt.In(tl.CustodianLeaves.Location())
			case k.RetiredAt != nil:
				keyDied = k.RetiredAt.In(tl.CustodianLeaves.Location())
			}
		}
	}
	c := cw.world()
	c.KeyDied = keyDied
	h.alertMu.Lock()
	if h.firstAlert != 0 {
		c.FirstAlert, c.FirstAlertRule = time.Unix(0, h.firstAlert).UTC(), h.firstRule
		c.AlertDelay = c.FirstAlert.Sub(tl.FirstForged)
	}
	if h.firstBhv != 0 {
		c.FirstBehaviour, c.FirstBehaviourRule = time.Unix(0, h.firstBhv).UTC(), h.firstBhvRule
	}
	h.alertMu.Unlock()
	forged := true
	switch h.sc.Config().AttackerVariant() {
	case scenario.StolenClientSecret, scenario.ReplayedTokens:
		forged = false // real tokens: the key's death does not stop them
	}
	if forged && !keyDied.IsZero() && !keyDied.After(tl.FirstForged) {
		// The key was dead before the attack began: contained from its
		// first request (as in events mode).
		c.Containment = tl.FirstForged
	}
	if h.opts.Contain {
		c.ContainmentOn = true
		c.Containment = cw.contained()
		acts := map[string]int64{}
		for _, a := range h.Server.Detect.Actions() {
			k := string(a.Action) + " on " + a.Rule
			if a.Error != "" {
				k += " (failed)"
			}
			acts[k]++
		}
		names := slices.Sorted(maps.Keys(acts))
		for i, k := range names {
			names[i] = k + " " + count(acts[k])
		}
		if len(names) > 0 {
			c.Notes = append(c.Notes, "containment actions: "+strings.Join(names, ", "))
		}
	}
	if c.NormalRequests > 0 {
		c.FalseAlarms = h.falseAl.Load()
		h.falseRules.Range(func(k, _ any) bool {
			c.Notes = append(c.Notes, "alert on normal traffic: "+k.(string))
			return true
		})
	}
	switch {
	case h.opts.Observe:
		c.Notes = append(c.Notes, "the copied key stayed live and the gateway's provenance check (not_issued) only observed: detection and containment stood in the way")
	case h.opts.KeyCopied:
		c.Notes = append(c.Notes, "the copied key stayed live: only provenance (not_issued) stood in the way")
	case h.opts.NoLifecycle:
		c.Notes = append(c.Notes, "custodian deactivated over SCIM at his departure, but not linked to the key: the server's rotation schedule (on simulated time) rotated it out and retired it")
	default:
		c.Notes = append(c.Notes, "custodian deactivated over SCIM at his departure; offboarding rotated and revoked the key he held")
	}
	if d, err := h.scope(ctx); err == nil {
		c.TimeToScope = d.took
		c.Notes = append(c.Notes, d.note)
	} else {
		c.Notes = append(c.Notes, "scope failed: "+err.Error())
	}
	if bw == nil {
		h.report = NewReport(h.sc, "http", c)
		return h.report, nil
	}
	b := bw.world()
	b.KeyDied = tl.Revoked
	if h.sc.Config().AttackerVariant() == scenario.StolenKey {
		// Historical: the attacker's e-mails, then the key's revocation.
		b.FirstAlert, b.AlertDelay = tl.Awareness, tl.Awareness.Sub(tl.FirstForged)
		b.Containment = tl.Revoked
	}
	b.Notes = append(b.Notes, "signature-only gateway over HTTP: served every forged token until the historical revocation")
	h.report = NewReport(h.sc, "http", b, c)
	return h.report, nil
}

// awaitDetection waits (at most maxCatchUp) until detection has taken
// every request sent to the gateway, and a moment more for its alerts'
// containment, then clears catchUp. Simulated time runs thousands of times
// faster than the wall clock: without it, the requests in flight while
// detection works would be served across hours of simulated time, where
// events mode (one event at a time with containment on) serves none.
func (h *HTTPReplay) awaitDetection(ctx context.Context) {
	acts := len(h.Server.Detect.Actions())
	deadline := time.Now().Add(maxCatchUp)
	for h.Server.Detect.Events() < h.gwSent.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(200 * time.Microsecond)
	}
	// The batch's alerts are delivered and their containment carried out
	// (an audit record each) after detection counts the events: wait a
	// little for a new action, none if the request raised none.
	deadline = time.Now().Add(maxActionWait)
	for len(h.Server.Detect.Actions()) == acts && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * time.Millisecond) // the gateway takes the action in
	h.catchUp.Store(false)
}

// maxCatchUp bounds one wait for detection, maxActionWait one wait for an
// action after it.
const (
	maxCatchUp    = time.Second
	maxActionWait = 50 * time.Millisecond
)

// Report writes the last run's report as Markdown.
func (h *HTTPReplay) Report(w io.Writer) error { return h.report.WriteMarkdown(w) }

type scoped struct {
	took time.Duration
	note string
}

// advance moves the no-lifecycle world's simulated clock to t (never
// back), applying the server's key schedule at every schedStep on the way,
// as its schedule loop would on a wall clock.
func (h *HTTPReplay) advance(ctx context.Context, t time.Time) error {
	for !h.lastSched.Add(schedStep).After(t) {
		h.lastSched = h.lastSched.Add(schedStep)
		h.simNow.Store(max(h.simNow.Load(), h.lastSched.UnixNano()))
		if err := h.Server.Keys.Tick(ctx); err != nil {
			return fmt.Errorf("key schedule at %s: %w", h.lastSched, err)
		}
	}
	h.simNow.Store(max(h.simNow.Load(), t.UnixNano()))
	return nil
}

// scope seals the event store and scopes the incident (the copied key), as
// an investigator would, timing it.
func (h *HTTPReplay) scope(ctx context.Context) (scoped, error) {
	start := time.Now()
	if err := h.Server.Forensics.Flush(); err != nil {
		return scoped{}, err
	}
	st, err := forensics.OpenWith(filepath.Join(h.Server.Config.Data, server.EventsDir), forensics.Options{Expander: addressBooks{h.sc.Population()}})
	if err != nil {
		return scoped{}, err
	}
	defer st.Close()
	sc, err := st.Scope(ctx, forensics.Indicators{KeyIDs: []string{h.stolenK.KID}}, nil)
	if err != nil {
		return scoped{}, err
	}
	defer sc.Close()
	return scoped{time.Since(start), fmt.Sprintf("scope of key %s from the event store: %d data subjects exposed, %d refused attempts", h.stolenK.KID, sc.Subjects, sc.Attempts)}, nil
}

func (h *HTTPReplay) depart(ctx context.Context) error {
	return h.call(ctx, "PATCH", h.APIURL+"/scim/v2/Users/"+h.custodian, h.scimTok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "replace", "value": map[string]any{"active": false}}},
	}, nil)
}

// replay sends r through custos's gateway and through the baseline.
func (h *HTTPReplay) replay(ctx context.Context, r *scenario.Request, tokens *tokenCache, cw, bw *httpWorld) error {
	h.firstUse.LoadOrStore(r.TokenID, r.Time.UnixNano())
	id := r.TokenID
	if h.opts.NoLifecycle {
		// On the simulated clock tokens expire: a new one every tokenStep.
		id += "@" + r.Time.Truncate(tokenStep).Format(time.RFC3339)
	}
	tok, err := tokens.get(id, r.Login, func() (string, error) { return h.token(ctx, r) })
	if err != nil {
		return err
	}
	attack := r.Kind.Attack()
	for _, w := range []struct {
		base string
		w    *httpWorld
	}{{h.GatewayURL, cw}, {h.BaselineURL, bw}} {
		if w.w == nil {
			continue
		}
		if w.w == cw {
			h.gwSent.Add(1)
		}
		st, reason, err := h.get(ctx, w.base+r.Path, tok, r)
		if err != nil {
			return err
		}
		if w.w == cw && attack && h.opts.Contain && (st == http.StatusOK || st == http.StatusNotFound) {
			h.catchUp.Store(true)
		}
		w.w.count(r, attack, st, reason)
	}
	return nil
}

// token gets r's bearer token: issued by the authority after a login (the
// login service names the session), issued to the attacker who holds the
// login service's secret (no session), or minted by the attacker with the
// copied key.
func (h *HTTPReplay) token(ctx context.Context, r *scenario.Request) (string, error) {
	if r.Token == scenario.Forged {
		s, k, err := h.signer(ctx)
		if err != nil {
			return "", err
		}
		now := time.Now()
		if h.opts.NoLifecycle {
			now = r.Time // the server runs on simulated time
		}
		return token.Sign(s, k.Alg, k.KID, token.Claims{
			Issuer: h.APIURL, Subject: r.Member, Audience: config.DefaultAudience,
			IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix(),
			JTI: r.TokenID, ClientID: h.clientID,
		})
	}
	var out struct {
		AccessToken string `json:"access_token"`
		JTI         string `json:"jti"`
	}
	session := r.SessionID
	if r.Token != scenario.IssuedStolenSecret && session == "" {
		session = "s-" + r.TokenID
	}
	secret := h.stolenSec
	if r.Token != scenario.IssuedStolenSecret {
		h.secretMu.Lock()
		secret = h.secret
		h.secretMu.Unlock()
	}
	body := map[string]any{
		"subject": r.Member, "audience": config.DefaultAudience, "ttl": 900,
		"client_ip": r.SrcIP.String(), "session_id": session,
	}
	// The caller, as in events mode: the login service's servers for a
	// customer's login, the attacker's own machine with the stolen secret.
	from := loginCaller
	if r.Token == scenario.IssuedStolenSecret {
		from = r.Addr
		h.asked.LoadOrStore(r.Addr+" "+r.Member, r.Time.UnixNano())
	}
	if h.opts.direct {
		from = ""
	}
	err := h.callFrom(ctx, "POST", h.APIURL+"/v1/tokens", secret, from, body, &out)
	if err != nil && r.Kind.Attack() && (strings.Contains(err.Error(), ": 403 ") || strings.Contains(err.Error(), ": 401 ")) {
		// The authority refuses the subject (a decoy) or the secret
		// (suspended by containment): the attacker goes without a token,
		// and the gateway refuses the request.
		return "", nil
	}
	if err != nil && strings.Contains(err.Error(), ": 401 ") {
		// Containment suspended the login service's secret: its owner
		// registers the service again, with a secret the attacker lacks.
		if err := h.reregister(ctx, secret); err != nil {
			return "", err
		}
		h.secretMu.Lock()
		secret = h.secret
		h.secretMu.Unlock()
		err = h.callFrom(ctx, "POST", h.APIURL+"/v1/tokens", secret, from, body, &out)
	}
	if err == nil && r.Token == scenario.IssuedStolenSecret {
		h.attackJTI.Store(out.JTI, r.Time.UnixNano())
	}
	return out.AccessToken, err
}

// reregister gives the login service a new client and secret, once, after
// containment suspended the one in use (old).
func (h *HTTPReplay) reregister(ctx context.Context, old string) error {
	h.secretMu.Lock()
	defer h.secretMu.Unlock()
	if h.secret != old {
		return nil // another request did it
	}
	var cl struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := h.admin(ctx, "POST", "/v1/clients", map[string]any{"name": "login-service-2", "audience": []string{config.DefaultAudience}}, &cl); err != nil {
		return fmt.Errorf("failed to register the login service again: %w", err)
	}
	h.secret = cl.Secret
	return nil
}

func (h *HTTPReplay) get(ctx context.Context, u, tok string, r *scenario.Request) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-For", r.SrcIP.String())
	req.Header.Set("User-Agent", r.UserAgent)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var refusal struct {
		Reason string `json:"error_description"`
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&refusal)
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, refusal.Reason, nil
}

// Close stops every server and removes a temp data dir.
func (h *HTTPReplay) Close() error {
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
	for _, s := range h.servers {
		s.Close()
	}
	if h.Server != nil {
		h.Server.Close()
	}
	if h.ownData {
		// h.Data, not h.opts.Data: the temporary directory is made after
		// the options were copied.
		return os.RemoveAll(h.Data)
	}
	return nil
}

// Wait blocks until ctx ends, serving (the demo keeps running for the user).
func (h *HTTPReplay) Wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-h.done:
	}
}

// httpWorld counts what one gateway let through.
type httpWorld struct {
	name     string
	mu       sync.Mutex
	exposure *Exposure
	sent     int64
	served   int64
	normal   int64
	refusals map[string]int64 // attack requests refused, by reason
	// reasonSpan is, by reason, the first and last attack request refused
	// for it (unix nanos, simulated).
	reasonSpan map[string][2]int64
	// lastServed is the latest attack request served and refused the times
	// of those refused (unix nanos, simulated): requests are in flight
	// several at once, so containment is worked out at the end.
	lastServed int64
	refused    []int64
}

// contained is when the attack stopped being served: the first refused
// attack request after which none was served; zero if the last one was
// served or none was refused.
func (w *httpWorld) contained() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var at int64
	for _, t := range w.refused {
		if t > w.lastServed && (at == 0 || t < at) {
			at = t
		}
	}
	if at == 0 {
		return time.Time{}
	}
	return time.Unix(0, at).UTC()
}

func (w *httpWorld) count(r *scenario.Request, attack bool, status int, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !attack {
		w.normal++
		return
	}
	w.sent++
	t := r.Time.UnixNano()
	if reason != "" {
		if w.refusals == nil {
			w.refusals = map[string]int64{}
			w.reasonSpan = map[string][2]int64{}
		}
		w.refusals[reason]++
		sp, ok := w.reasonSpan[reason]
		if !ok {
			sp = [2]int64{t, t}
		}
		w.reasonSpan[reason] = [2]int64{min(sp[0], t), max(sp[1], t)}
	}
	if status == http.StatusOK || status == http.StatusNotFound {
		w.served++ // the shop answered: the token was accepted
		w.lastServed = max(w.lastServed, t)
	} else if status == http.StatusUnauthorized || status == http.StatusForbidden {
		w.refused = append(w.refused, t)
	}
	if status == http.StatusOK {
		w.exposure.Add(r)
	}
}

func (w *httpWorld) world() World {
	out := World{Name: w.name, ForgedSent: w.sent, ForgedServed: w.served, NormalRequests: w.normal}
	w.exposure.Fill(&out)
	if len(w.refusals) > 0 {
		reasons := make([]string, 0, len(w.refusals))
		for r := range w.refusals {
			reasons = append(reasons, r)
		}
		slices.Sort(reasons)
		for i, r := range reasons {
			reasons[i] = r + " " + count(w.refusals[r])
		}
		out.Notes = append(out.Notes, "attack requests refused: "+strings.Join(reasons, ", "))
	}
	return out
}

type tokenCache struct {
	mu sync.Mutex
	m  map[string]*tokenEntry
}

type tokenEntry struct {
	once   sync.Once
	tok    string
	err    error
	minted atomic.Bool // tok is set (read without waiting on once)
}

func newTokenCache() *tokenCache { return &tokenCache{m: map[string]*tokenEntry{}} }

func (c *tokenCache) get(id string, fresh bool, mint func() (string, error)) (string, error) {
	c.mu.Lock()
	e := c.m[id]
	if e == nil || (fresh && e.minted.Load()) {
		e = &tokenEntry{}
		c.m[id] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.tok, e.err = mint()
		e.minted.Store(e.tok != "")
	})
	return e.tok, e.err
}

// sigOnly is the breached design's gateway: it accepts any token whose
// signature verifies with a key it has ever seen, until the historical
// revocation of the abused key (in simulated time).
type sigOnly struct {
	proxy   *httputil.ReverseProxy
	keys    *keys.Manager
	revoked time.Time
	now     func() time.Time
	mu      sync.Mutex
	seen    map[string]keys.Key
}

func newSigOnly(upstream string, km *keys.Manager, revoked time.Time, now func() time.Time) (*sigOnly, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	return &sigOnly{proxy: httputil.NewSingleHostReverseProxy(u), keys: km, revoked: revoked, now: now, seen: map[string]keys.Key{}}, nil
}

func (g *sigOnly) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	p, err := token.Parse(raw)
	if err != nil {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	g.mu.Lock()
	k, ok := g.seen[p.Header.KID]
	if !ok {
		if k, ok = g.keys.Lookup(p.Header.KID); ok {
			g.seen[p.Header.KID] = k // never forgotten: keys live for years
		}
	}
	g.mu.Unlock()
	if !ok || !g.now().Before(g.revoked) || token.VerifySignature(p, k.Alg, k.Public) != nil {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	g.proxy.ServeHTTP(w, r)
}

// writeGeoDB writes a MaxMind-format database of the scenario's networks so
// the gateway fills country and ASN as it would in production.
func writeGeoDB(path string, nets []scenario.Network) (string, error) {
	out := make([]geodb.Network, len(nets))
	for i, n := range nets {
		out[i] = geodb.Network{Prefix: n.Prefix, Country: n.Country, ASN: n.ASN}
	}
	return path, geodb.Write(path, "custos-replay", out)
}

var errNoIP = errors.New("no ip")

func netipParse(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errNoIP
	}
	return netip.ParseAddr(s)
}

// span is the first and last attack request refused for reason (zero
// times if none was).
func (w *httpWorld) span(reason string) (first, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sp, ok := w.reasonSpan[reason]
	if !ok {
		return time.Time{}, time.Time{}
	}
	return time.Unix(0, sp[0]).UTC(), time.Unix(0, sp[1]).UTC()
}
