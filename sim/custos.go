package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/shop"
	"github.com/custos-dev/custos/sim/scenario"
	"github.com/custos-dev/custos/staff"
)

// Key ids the replay gives the two kinds of token.
const (
	stolenKID = "k-copied"
	liveKID   = "k-live"
)

// The login service, as the authority knows it: the one client that asks
// for customers' tokens, from the shop's own servers.
const (
	loginClient = "cl-login-service"
	loginCaller = "10.20.0.7"
)

// CustosOptions choose a custos world: everything on at default settings, or
// one control taken away so its share is visible.
type CustosOptions struct {
	Name string
	// KeyStolenAnyway: the attacker holds a key that custody still treats as
	// live (the sealed keyring and its KEK both stolen, and stolen again after
	// each rotation). Only provenance and detection stand in the way.
	KeyStolenAnyway bool
	// Observe runs the gateway's provenance check (not_issued) in observe
	// mode: forged tokens pass, detection sees them.
	Observe bool
	// NoLifecycle cuts the link between the key and its custodian: his
	// departure does not rotate it; only the rotation schedule kills it.
	NoLifecycle bool
	// Contain turns on automatic containment: a not_issued or decoy_subject
	// alert revokes the key that signed the token; a foreign_origin alert
	// blocks the source network for a day, a foreign_spread alert the
	// country for a day; an issuance-side alert on a
	// client (tokens without a login, subjects in sequence, the rate)
	// suspends the client's secret.
	Contain bool
	// DPoP: customers' tokens are bound to a key their device holds and
	// does not export (RFC 9449, cnf.jkt). A token copied off the device
	// comes without that key: replayed with the proof captured beside it
	// (stale, for another URL, its jti already seen) or with one of the
	// thief's own key, it is refused as bad_dpop_proof. The attacker's own
	// tokens (a stolen client secret) are bound to his own key and pass.
	DPoP bool
	// Policy is the key policy (keys.DefaultPolicy() when zero).
	Policy keys.Policy
	// Detect configures detection (detect.DefaultConfig() when nil).
	Detect *detect.Config
	// EventsDir, if set, receives every access event as Parquet, and the
	// world's TimeToScope is measured by scoping the incident over it.
	EventsDir string
}

// Custos is a world with custos in front of the shop.
type Custos struct {
	o      CustosOptions
	tl     scenario.Timeline
	pop    shop.Population
	engine *detect.Engine
	// writers write the event store, two at once: writers[h%2] takes the
	// events of hour h (hours since the epoch), so each hour partition has
	// one writer and both cores can encode.
	writers  []*forensics.Writer
	exposure *Exposure

	// now is the simulated time (Unix nanoseconds) of the request detection
	// is processing: the engine's clock and containment's.
	now atomic.Int64

	mu          sync.Mutex
	keyDied     time.Time
	killedBy    string
	blocks      []block
	countries   map[string]time.Time // blocked countries, until
	firstAlert  time.Time
	firstRule   string
	firstBhv    time.Time
	firstBhvRul string
	forgedAtk   bool      // the attacker's tokens are forged with the copied key
	lastServed  time.Time // the last real-token attack request served
	containment time.Time
	suspended   time.Time // the login service's secret suspended
	falseAlarms int64
	attackSeqs  bitset
	maxSeq      uint64
	attackHours attackHours
	attackIDs   attackBlocks

	sent, served, normal int64
	writeErr             error

	// batch holds events for detection when requests come one at a time
	// (Observe). Worlds without containment hand detection batches (both
	// cores); with containment each event goes alone, so an action takes
	// effect before the next request.
	batch []event.Access
}

// numWriters is how many event store writers a world runs at once.
const numWriters = 2

// writerOf returns which writer stores ev: by its hour.
func writerOf(ev *event.Access) int {
	return int(uint64(ev.Time.Unix()/3600) % numWriters)
}

// batchSize is how many events Observe gathers before handing them to detection.
const batchSize = 256

type block struct {
	p     netip.Prefix
	until time.Time
}

var _ Observer = (*Custos)(nil)

// NewCustos returns a custos world over s.
func NewCustos(s *scenario.Scenario, o CustosOptions) (*Custos, error) {
	if o.Policy == (keys.Policy{}) {
		o.Policy = keys.DefaultPolicy()
	}
	cfg := detect.DefaultConfig()
	if o.Detect != nil {
		cfg = *o.Detect
	}
	if o.Contain {
		if cfg.Containment == nil {
			cfg.Containment = map[string]detect.ContainPolicy{}
		}
		cfg.Containment[detect.RuleNotIssued] = detect.ContainPolicy{Action: detect.ActionRevokeKey}
		cfg.Containment[detect.RuleDecoySubject] = detect.ContainPolicy{Action: detect.ActionRevokeKey}
		// A real token (the attacker's own, issued with a stolen client
		// secret, or a customer's, replayed) used from abroad: the shop
		// serves one country, so its network is cut off for a day.
		cfg.Containment[detect.RuleForeignOrigin] = detect.ContainPolicy{Action: detect.ActionBlockSource, For: 24 * time.Hour}
		// Many customers' data read from one foreign country with real
		// tokens, over however many networks: the country is cut off for a
		// day (never the shop's own).
		cfg.Containment[detect.RuleForeignSpread] = detect.ContainPolicy{Action: detect.ActionBlockCountry, For: 24 * time.Hour}
		for _, r := range []string{detect.RuleIssuanceNoLogin, detect.RuleIssuanceSequence, detect.RuleIssuanceRate} {
			cfg.Containment[r] = detect.ContainPolicy{Action: detect.ActionSuspendClient}
		}
	}
	c := &Custos{o: o, tl: s.Timeline(), pop: s.Population(), exposure: NewExposure(s.Population()),
		attackSeqs: newBitset(s.Expected() + 1), maxSeq: s.Expected()}
	c.attackIDs.block = cmp.Or(cfg.IDCoverage.Block, detect.DefaultCoverageBlock)
	c.attackIDs.window = cmp.Or(cfg.IDCoverage.Window, detect.DefaultCoverageWindow)
	switch s.Config().AttackerVariant() {
	case scenario.StolenKey, scenario.Distributed, scenario.LowAndSlow:
		c.forgedAtk = true
	}
	eng, err := detect.New(cfg, func() time.Time { return time.Unix(0, c.now.Load()).UTC() })
	if err != nil {
		return nil, err
	}
	eng.SetContainment(c)
	eng.OnAlert(c.onAlert)
	c.engine = eng
	if !o.KeyStolenAnyway {
		// The copied key was the active key when its custodian left.
		if o.NoLifecycle {
			// Rotated out within RotateEvery, verifies until MaxTokenTTL
			// (plus leeway) later, then retired: dead for the gateway.
			c.keyDied = c.tl.CustodianLeaves.Add(o.Policy.RotateEvery + o.Policy.MaxTokenTTL + o.Policy.RetireLeeway)
			c.killedBy = "rotation schedule (no custodian link)"
		} else {
			// The offboarding sweep runs every minute: rotate, then revoke.
			c.keyDied = c.tl.CustodianLeaves.Add(staff.DefaultSweepInterval)
			c.killedBy = "custodian's departure (offboarding sweep)"
		}
	}
	if o.EventsDir != "" {
		for range numWriters {
			w, err := forensics.NewWriter(o.EventsDir, forensics.WriterOptions{})
			if err != nil {
				return nil, err
			}
			c.writers = append(c.writers, w)
		}
	}
	return c, nil
}

// Engine is the world's detection engine.
func (c *Custos) Engine() *detect.Engine { return c.engine }

// Observe runs r through custos's gateway checks, detection and forensics.
func (c *Custos) Observe(r *scenario.Request) {
	var ev event.Access
	var is detect.Issuance
	c.decide(r, &ev, &is)
	c.now.Store(r.Time.UnixNano())
	c.mark(r.Seq, r.Kind.Attack(), &ev)
	if r.Login {
		c.engine.Login(r.TokenID, r.Time)
	}
	if !is.Time.IsZero() {
		c.engine.Issued(is)
	}
	if c.o.Contain {
		c.engine.Process(ev)
	} else {
		c.batch = append(c.batch, ev)
		if len(c.batch) == batchSize {
			c.flush()
		}
	}
	if c.writers != nil && c.writeErr == nil {
		c.writeErr = c.writers[writerOf(&ev)].Write(ev)
	}
}

// evBatch is one chunk's events on their way through a world's stages.
type evBatch struct {
	evs   []event.Access
	iss   []detect.Issuance // zero Time: no token issued for the request
	seqs  []uint64
	login []bool
	atk   []bool
	refs  atomic.Int32 // writers yet to finish with it
}

// writeQueue is how many batches each writer may have queued.
const writeQueue = 48

// consume runs every chunk from in through the world: the gateway's
// decision on this goroutine, then detection (in batches, on both cores;
// event by event with containment, here, so that an action takes effect
// before the next request) and the event store, each on a goroutine of its
// own. It hands each chunk back with release and adds the requests that
// went through every stage to done.
func (c *Custos) consume(in <-chan *chunk, release func(*chunk), done *atomic.Uint64) {
	free := make(chan *evBatch, writeQueue+8)
	toDetect := make(chan *evBatch, 2)
	toWrite := make(chan *evBatch, 4)
	var wg sync.WaitGroup
	finish := func(b *evBatch) {
		if b.refs.Add(-1) == 0 {
			done.Add(uint64(len(b.evs)))
			select {
			case free <- b:
			default:
			}
		}
	}
	if c.writers == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range toWrite {
				b.refs.Store(1)
				finish(b)
			}
		}()
	} else {
		// Each writer sees every batch and writes its own hours; the deep
		// queues let the writer of the next hour run ahead of the one
		// still finishing the last.
		qs := make([]chan *evBatch, numWriters)
		errs := make([]error, numWriters)
		var ww sync.WaitGroup
		for k := range qs {
			qs[k] = make(chan *evBatch, writeQueue)
			ww.Add(1)
			go func() {
				defer ww.Done()
				w := c.writers[k]
				for b := range qs[k] {
					for i := range b.evs {
						if errs[k] == nil && writerOf(&b.evs[i]) == k {
							errs[k] = w.Write(b.evs[i])
						}
					}
					finish(b)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range toWrite {
				b.refs.Store(numWriters)
				for _, q := range qs {
					q <- b
				}
			}
			for _, q := range qs {
				close(q)
			}
			ww.Wait()
			c.writeErr = errors.Join(errs...)
		}()
	}
	if !c.o.Contain {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(toWrite)
			for b := range toDetect {
				for i := range b.evs {
					c.mark(b.seqs[i], b.atk[i], &b.evs[i])
					if b.login[i] {
						c.engine.Login(b.evs[i].Token.JTI, b.evs[i].Time)
					}
					if !b.iss[i].Time.IsZero() {
						c.engine.Issued(b.iss[i])
					}
				}
				c.now.Store(b.evs[len(b.evs)-1].Time.UnixNano())
				c.engine.ProcessBatch(b.evs)
				toWrite <- b
			}
		}()
	}
	for ch := range in {
		var b *evBatch
		select {
		case b = <-free:
		default:
			b = &evBatch{evs: make([]event.Access, chunkSize), iss: make([]detect.Issuance, chunkSize), seqs: make([]uint64, chunkSize), login: make([]bool, chunkSize), atk: make([]bool, chunkSize)}
		}
		n := len(ch.reqs)
		b.evs, b.iss, b.seqs, b.login, b.atk = b.evs[:n], b.iss[:n], b.seqs[:n], b.login[:n], b.atk[:n]
		for i := range ch.reqs {
			r := &ch.reqs[i]
			c.decide(r, &b.evs[i], &b.iss[i])
			b.seqs[i], b.login[i], b.atk[i] = r.Seq, r.Login, r.Kind.Attack()
			if c.o.Contain {
				c.now.Store(r.Time.UnixNano())
				c.mark(r.Seq, b.atk[i], &b.evs[i])
				if r.Login {
					c.engine.Login(r.TokenID, r.Time)
				}
				if !b.iss[i].Time.IsZero() {
					c.engine.Issued(b.iss[i])
				}
				c.engine.Process(b.evs[i])
			}
		}
		release(ch)
		if c.o.Contain {
			toWrite <- b
		} else {
			toDetect <- b
		}
	}
	if c.o.Contain {
		close(toWrite)
	} else {
		close(toDetect)
	}
	wg.Wait()
}

// decide fills ev with the access event custos's gateway emits for r, and
// is with the issuance of r's token when the authority issues one for it
// (zero otherwise), and counts what was sent and served.
func (c *Custos) decide(r *scenario.Request, ev *event.Access, is *detect.Issuance) {
	r.AccessInto("custos-gw", ev)
	*is = detect.Issuance{}
	if r.Login {
		// A customer's login: the login service asks for the token, from
		// its own servers, naming the login session.
		*is = detect.Issuance{Time: r.Time, RequestID: r.ID, Client: loginClient, Subject: r.Member,
			Session: cmp.Or(r.SessionID, "s-"+r.TokenID), Caller: loginCaller, ClientIP: r.Addr, JTI: r.TokenID, KID: liveKID}
	}
	if !r.Kind.Attack() {
		c.normal++
		ev.Token.KID = liveKID
		ev.Verdict = event.Allow
		return
	}
	c.sent++
	if r.Token == scenario.IssuedStolenSecret {
		c.mu.Lock()
		suspended := !c.suspended.IsZero() && !r.Time.Before(c.suspended)
		c.mu.Unlock()
		if suspended {
			// The authority refuses the suspended secret: no token, and
			// the request goes out without one.
			ev.Token = event.Token{}
			ev.Verdict, ev.Reason, ev.Status = event.Deny, event.ReasonMissingToken, 401
			return
		}
		// Whoever holds the secret asks for the token from their own
		// machine, with no login behind it.
		*is = detect.Issuance{Time: r.Time, RequestID: r.ID, Client: loginClient, Subject: r.Member,
			Caller: r.Addr, ClientIP: r.Addr, JTI: r.TokenID, KID: liveKID}
	}
	if r.Token != scenario.Forged {
		// A real token (issued with the stolen client secret, or a
		// customer's, replayed): signature, ledger and subject binding pass;
		// only a block of its source, or for a customer's token its binding
		// to the customer's key (CustosOptions.DPoP), stops it.
		ev.Token.KID = liveKID
		if c.blocked(r) {
			ev.Verdict, ev.Reason, ev.Status = event.Deny, event.ReasonBlockedSource, 403
			return
		}
		if c.o.DPoP && r.Token == scenario.Replayed {
			ev.Verdict, ev.Reason, ev.Status = event.Deny, event.ReasonBadDPoPProof, 401
			return
		}
		ev.Verdict = event.Allow
		c.served++
		c.lastServed = r.Time
		c.exposure.Add(r)
		return
	}
	ev.Token.KID = stolenKID
	if reason, deny := c.verdict(r); deny {
		ev.Verdict, ev.Reason, ev.Status = event.Deny, reason, 401
	} else {
		ev.Verdict, ev.Reason = event.Allow, reason
		c.served++
		c.exposure.Add(r)
	}
}

// mark records that request seq, about to reach detection, was the
// attacker's, so that alerts can be told apart from false alarms.
func (c *Custos) mark(seq uint64, attack bool, ev *event.Access) {
	if attack && seq <= c.maxSeq {
		c.attackSeqs.add(seq)
		c.attackHours.mark(ev.Route, ev.Time)
		c.attackIDs.mark(ev.Subject, ev.Time)
	}
}

// attackBlocks remembers, per block of the member-ID space (id_coverage's
// blocks), when forged requests last read it: an id_coverage alert on a block
// the attack read within the window is the attack's, whichever request in
// the block (perhaps a customer's own) crossed the threshold.
type attackBlocks struct {
	block  uint64
	window time.Duration

	mu   sync.Mutex
	last map[uint64]int64 // block → unix seconds
}

func (a *attackBlocks) mark(subject string, t time.Time) {
	id, err := strconv.ParseUint(subject, 10, 64)
	if err != nil || a.block == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[uint64]int64{}
	}
	a.last[id/a.block] = t.Unix()
}

// had reports whether the attack read block lo's block within the window
// before t.
func (a *attackBlocks) had(entity string, t time.Time) bool {
	lo, _, ok := strings.Cut(strings.TrimPrefix(entity, "id_block:"), "-")
	id, err := strconv.ParseUint(lo, 10, 64)
	if !ok || err != nil || a.block == 0 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	last, seen := a.last[id/a.block]
	return seen && last <= t.Unix() && t.Sub(time.Unix(last, 0)) <= a.window
}

// attackHours remembers, per route, the hours in which forged requests were
// made. An alert on a route's volume is raised by whichever request crosses
// the threshold, often an ordinary one, so its samples cannot tell whether
// the attack caused it; the hour can. mark is called by one goroutine at a
// time (the stage feeding detection); had may be called from any.
type attackHours struct {
	lastRoute string
	lastHour  int64

	mu    sync.Mutex
	hours map[string]map[int64]bool
}

func (a *attackHours) mark(route string, t time.Time) {
	h := t.Unix() / 3600
	if route == a.lastRoute && h == a.lastHour {
		return
	}
	a.lastRoute, a.lastHour = route, h
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hours == nil {
		a.hours = map[string]map[int64]bool{}
	}
	if a.hours[route] == nil {
		a.hours[route] = map[int64]bool{}
	}
	a.hours[route][h] = true
}

func (a *attackHours) had(route string, t time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hours[route][t.Unix()/3600]
}

// blocked reports whether containment blocks r's source now. The
// containment time is the first request blocked since the attack was last
// served: a block that stopped one network while others were still served
// did not contain the attack, the one after which nothing was served did.
func (c *Custos) blocked(r *scenario.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sourceBlocked(r) {
		if c.containment.IsZero() || !c.containment.After(c.lastServed) {
			c.containment = r.Time
		}
		return true
	}
	return false
}

// sourceBlocked reports whether a block of its network or of its country
// (by the replay's geolocation of the source) refuses r; c.mu is held.
func (c *Custos) sourceBlocked(r *scenario.Request) bool {
	for _, b := range c.blocks {
		if b.p.Contains(r.SrcIP) && r.Time.Before(b.until) {
			return true
		}
	}
	until, ok := c.countries[r.Country]
	return ok && r.Time.Before(until)
}

// verdict applies the gateway's checks, in its order, to a forged token.
func (c *Custos) verdict(r *scenario.Request) (event.Reason, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sourceBlocked(r) {
		return event.ReasonBlockedSource, true
	}
	if !c.keyDied.IsZero() && !r.Time.Before(c.keyDied) {
		return event.ReasonRevokedKey, true
	}
	if !c.o.Observe {
		return event.ReasonNotIssued, true
	}
	if r.Decoy {
		return event.ReasonDecoySubject, true
	}
	return event.ReasonNotIssued, false // observe: passed, but the event says what enforce would do
}

func (c *Custos) flush() {
	if len(c.batch) > 0 {
		c.engine.ProcessBatch(c.batch)
		c.batch = c.batch[:0]
	}
}

func (c *Custos) simNow() time.Time { return time.Unix(0, c.now.Load()).UTC() }

func (c *Custos) onAlert(a detect.Alert) {
	attack := false
	for _, id := range a.Samples {
		if seq, err := strconv.ParseUint(strings.TrimPrefix(id, "r"), 10, 64); err == nil && seq <= c.maxSeq && c.attackSeqs.has(seq) {
			attack = true
			break
		}
	}
	if !attack && a.Rule == detect.RuleRouteVolume {
		at := a.Raised
		if at.IsZero() {
			at = a.FirstSeen
		}
		attack = c.attackHours.had(strings.TrimPrefix(a.Entity, "route:"), at)
	}
	if !attack && a.Rule == detect.RuleIDCoverage {
		at := a.Raised
		if at.IsZero() {
			at = a.FirstSeen
		}
		attack = c.attackIDs.had(a.Entity, at)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !attack {
		c.falseAlarms++
		return
	}
	at := a.Raised // the event time of the request that raised it
	if at.IsZero() {
		at = c.simNow()
	}
	if c.firstAlert.IsZero() || at.Before(c.firstAlert) {
		c.firstAlert, c.firstRule = at, a.Rule
	}
	if behaviourRule(a.Rule) && (c.firstBhv.IsZero() || at.Before(c.firstBhv)) {
		c.firstBhv, c.firstBhvRul = at, a.Rule
	}
}

// behaviourRule reports whether rule is blind to the token's provenance:
// what observe mode or a log-ingesting gateway still sees.
func behaviourRule(rule string) bool {
	switch rule {
	case detect.RuleNotIssued, detect.RuleRevokedKey, detect.RuleDecoySubject, detect.RuleDepartedCred:
		return false
	}
	return true
}

// RevokeKey is containment: the key dies now (simulated time).
func (c *Custos) RevokeKey(ctx context.Context, kid, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.simNow(); kid == stolenKID && (c.keyDied.IsZero() || now.Before(c.keyDied)) {
		c.keyDied = now
		c.killedBy = "automatic containment (" + reason + ")"
		if c.containment.IsZero() {
			c.containment = now
		}
	}
	return nil
}

// BlockSource is containment: the gateway refuses the network until until.
func (c *Custos) BlockSource(ctx context.Context, p netip.Prefix, until time.Time, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocks = append(c.blocks, block{p, until})
	return nil
}

// BlockCountry is containment: the gateway refuses every source in the
// country until until.
func (c *Custos) BlockCountry(ctx context.Context, country string, until time.Time, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.countries == nil {
		c.countries = map[string]time.Time{}
	}
	if until.After(c.countries[country]) {
		c.countries[country] = until
	}
	return nil
}

var _ detect.CountryBlocker = (*Custos)(nil)

// SuspendClient is containment: the authority refuses the login service's
// secret from now on (simulated time).
func (c *Custos) SuspendClient(ctx context.Context, id, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == loginClient && c.suspended.IsZero() {
		c.suspended = c.simNow()
	}
	return nil
}

var _ detect.ClientSuspender = (*Custos)(nil)

// RevokeToken is containment; the replay's forged tokens are not in any
// ledger, so there is nothing to revoke.
func (c *Custos) RevokeToken(ctx context.Context, jti, reason string) error { return nil }

// ForceRelogin is containment; it does not change the replay.
func (c *Custos) ForceRelogin(ctx context.Context, subject, reason string) error { return nil }

// World returns the outcome. With EventsDir set it closes the event store and
// measures the time to a complete scope of the incident (wall clock).
func (c *Custos) World(ctx context.Context) (World, error) {
	c.flush()
	w := World{
		Name: c.o.Name, KeyDied: c.keyDied, FirstAlert: c.firstAlert, FirstAlertRule: c.firstRule,
		FirstBehaviour: c.firstBhv, FirstBehaviourRule: c.firstBhvRul, Containment: c.containment, ContainmentOn: c.o.Contain,
		ForgedSent: c.sent, ForgedServed: c.served, NormalRequests: c.normal,
	}
	if !w.FirstAlert.IsZero() {
		w.AlertDelay = w.FirstAlert.Sub(c.tl.FirstForged)
	}
	w.FalseAlarms = c.falseAlarms
	if c.forgedAtk && w.Containment.IsZero() && !c.keyDied.IsZero() && !c.keyDied.After(c.tl.FirstForged) {
		// The key was dead before the attack began: it was never served,
		// contained from its first request.
		w.Containment = c.tl.FirstForged
	}
	if !c.forgedAtk && !w.Containment.IsZero() && c.lastServed.After(w.Containment) {
		// A block stopped one source, not the attack.
		w.Containment = time.Time{}
		if c.suspended.IsZero() || c.lastServed.After(c.suspended) {
			w.Notes = append(w.Notes, "sources blocked, but the attack was served until "+c.lastServed.In(scenario.KST).Format(timeLayout))
		}
	}
	if !c.forgedAtk && w.Containment.IsZero() && !c.suspended.IsZero() && !c.lastServed.After(c.suspended) {
		w.Containment = c.suspended
		w.Notes = append(w.Notes, "the login service's client secret suspended by containment")
	}
	c.exposure.Fill(&w)
	if c.killedBy != "" {
		w.Notes = append(w.Notes, "key died by "+c.killedBy)
	}
	if c.writers != nil {
		// The store is written as events arrive; the clock starts when the
		// investigator asks.
		for _, wr := range c.writers {
			if err := wr.Close(); err != nil {
				return w, fmt.Errorf("failed to close the event store: %w", err)
			}
		}
		if c.writeErr != nil {
			return w, fmt.Errorf("failed to write events: %w", c.writeErr)
		}
		start := time.Now()
		st, err := forensics.OpenWith(c.o.EventsDir, forensics.Options{Expander: addressBooks{c.pop}})
		if err != nil {
			return w, err
		}
		defer st.Close()
		sc, err := st.Scope(ctx, forensics.Indicators{KeyIDs: []string{stolenKID}}, nil)
		if err != nil {
			return w, fmt.Errorf("failed to scope the incident: %w", err)
		}
		defer sc.Close()
		w.TimeToScope = time.Since(start)
		w.Notes = append(w.Notes, fmt.Sprintf("scope from the event store: %d data subjects exposed (%d members, %d non-members), %d exposures, %d refused attempts",
			sc.Subjects, sc.Members, sc.NonMembers, sc.Exposures, sc.Attempts))
	}
	return w, nil
}

// addressBooks tells forensics whose data an address-book page carries
// besides its owner's: the recipients in the owner's address book.
type addressBooks struct{ pop shop.Population }

func (a addressBooks) Expand(ctx context.Context, subject string, classes []string) ([]forensics.Related, error) {
	id, ok := shop.ParseMember(subject)
	if !ok {
		return nil, nil
	}
	var out []forensics.Related
	for _, r := range a.pop.Recipients(id) {
		if r != subject {
			out = append(out, forensics.Related{Subject: r, DataClasses: []string{event.ClassName, event.ClassPhone, event.ClassAddress}})
		}
	}
	return out, nil
}
