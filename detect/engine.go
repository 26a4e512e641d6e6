package detect

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/store"
)

// Engine runs the detectors over access events. Its methods are safe for
// concurrent use; events are processed under a lock, one at a time
// ([Engine.Process]) or a batch at a time ([Engine.ProcessBatch]), where
// the per-key state is split between numShards goroutines.
type Engine struct {
	cfg  Config
	now  func() time.Time
	seed maphash.Seed

	mu      sync.Mutex
	b       *builtins
	iss     *issuance
	rules   atomic.Pointer[ruleSet]
	one     [1]event.Access // Process's event, so that it does not escape
	pending []pendingAlert

	open      map[uint64]*Alert // rule+entity → alert in its dedup window
	slots     *[numSlots]openSlot
	incGen    uint64   // bumped whenever incByID changes; see openSlot
	flushGen  uint64   // bumped whenever the dirty sets are emptied
	alerts    []*Alert // ring, oldest first after wrap
	alertKeys []uint64 // dedup key of alerts[i]
	alertNext int
	byID      map[string]*Alert
	incidents []*Incident
	incNext   int
	incByKey  map[string]*Incident
	incByID   map[string]*Incident
	actions   []ActionRecord
	limits    *limiter // containment rate limits, under mu
	persist   bool     // a store is set: track what Flush must write
	dirtyA    map[*Alert]struct{}
	dirtyI    map[*Incident]struct{}
	dirtyX    []ActionRecord

	subMu   sync.RWMutex
	subs    []func(Alert)
	contain Containment
	db      *store.DB
	// auditQueue: Flush queues new alerts for the audit log (QueueAudit).
	auditQueue bool
	replaying  atomic.Bool // see Replaying
	stream     broker
	events     atomic.Uint64
	raised     atomic.Uint64 // alerts raised (not updates of open ones)
}

// numSlots is the size of the cache of open alerts (a power of two).
const numSlots = 1024

// openSlot caches, for dedup key k, what a match of an open alert needs:
// the alert (e.open[k]), the end of its dedup window and its incident. The
// slots are a direct-mapped cache over e.open: a match that updates an open
// alert costs one comparison instead of a map lookup by key and one by
// incident ID. A slot is rewritten whenever e.open[k] changes; inc is
// valid while incGen equals the engine's (which changes with incByID), and
// dirtyGen/incDirty record that a and inc are in the dirty sets of flush
// generation e.flushGen, so that a burst of matches inserts them once.
type openSlot struct {
	k        uint64
	a        *Alert // nil: empty slot
	until    time.Time
	inc      *Incident
	incGen   uint64
	dirtyGen uint64
	incDirty uint64
}

type pendingAlert struct {
	a      Alert
	policy *ContainPolicy
}

// New returns an engine. Zero fields of cfg take their defaults; now is the
// wall clock, used only where no event time exists (Raise, Login without time).
func New(cfg Config, now func() time.Time) (*Engine, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	e := &Engine{
		cfg: cfg, now: now, seed: maphash.MakeSeed(),
		open: make(map[uint64]*Alert), slots: new([numSlots]openSlot), incGen: 1, flushGen: 1,
		byID:     make(map[string]*Alert),
		incByKey: make(map[string]*Incident), incByID: make(map[string]*Incident),
		dirtyA: make(map[*Alert]struct{}), dirtyI: make(map[*Incident]struct{}),
		limits: newLimiter(cfg.ContainmentLimits),
	}
	e.b = newBuiltins(&e.cfg, e.seed)
	e.iss = newIssuance(&e.cfg, e.seed)
	e.rules.Store(&ruleSet{})
	return e, nil
}

// Config returns the effective configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// OnAlert registers fn to receive every new alert. fn runs on the goroutine
// that processed the event and must not block for long (sinks buffer).
func (e *Engine) OnAlert(fn func(Alert)) {
	e.subMu.Lock()
	e.subs = append(e.subs, fn)
	e.subMu.Unlock()
}

// SetContainment sets what containment actions call. Without it, only
// dry-run policies make sense; others are recorded with ErrNoContainment.
func (e *Engine) SetContainment(c Containment) {
	e.subMu.Lock()
	e.contain = c
	e.subMu.Unlock()
}

// SetSessionFunc sets how an access event names its login session for
// token_without_login. The default is the token's jti, for login services
// that report the jti of the token they obtained as the session id.
// fn must be safe for concurrent use: batches call it from both shards.
func (e *Engine) SetSessionFunc(fn func(*event.Access) string) {
	e.mu.Lock()
	e.b.sessionOf = fn
	e.mu.Unlock()
}

// Events reports how many events have been processed.
func (e *Engine) Events() uint64 { return e.events.Load() }

// Process runs every detector and rule over ev.
func (e *Engine) Process(ev event.Access) {
	e.events.Add(1)
	e.mu.Lock()
	rs := e.rules.Load()
	e.one[0] = ev
	x, p := &e.one[0], &e.b.shards[0].p
	e.b.prepare(x, p, &e.b.shards[0].ck)
	for _, sh := range e.b.shards {
		sh.idx = 0
		e.b.process(sh, x, p)
		rs.eval(e.b, sh, x, p)
	}
	e.applyFires(e.one[:])
	e.unlockAndDeliver()
}

// minParallel is the smallest batch worth a second goroutine.
const minParallel = 64

// ProcessBatch runs every detector and rule over evs, in order. The result
// is the same as calling Process for each event in turn (alerts and their
// counts, samples and incidents are identical); subscribers see the batch's
// new alerts after the whole batch. Large batches use numShards goroutines,
// each owning the per-key state of the keys that hash to it, so per-key
// order is kept.
func (e *Engine) ProcessBatch(evs []event.Access) {
	if len(evs) == 0 {
		return
	}
	if len(evs) > 1<<30 {
		panic("detect: batch too large")
	}
	e.events.Add(uint64(len(evs)))
	e.mu.Lock()
	rs := e.rules.Load()
	if len(evs) < minParallel {
		p := &e.b.shards[0].p
		for i := range evs {
			e.b.prepare(&evs[i], p, &e.b.shards[0].ck)
			for _, sh := range e.b.shards {
				sh.idx = int32(i)
				e.b.process(sh, &evs[i], p)
				rs.eval(e.b, sh, &evs[i], p)
			}
		}
	} else {
		if cap(e.b.preps) < len(evs) {
			e.b.preps = make([]prep, len(evs))
		}
		preps := e.b.preps[:len(evs)]
		var wg, ready sync.WaitGroup
		ready.Add(numShards)
		for _, sh := range e.b.shards[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.b.runShard(rs, sh, evs, preps, &ready)
			}()
		}
		e.b.runShard(rs, e.b.shards[0], evs, preps, &ready)
		wg.Wait()
	}
	e.applyFires(evs)
	e.unlockAndDeliver()
}

// runShard prepares shard sh's share of evs into preps, waits on ready
// for the other shards' shares, then runs sh's part of every detector and
// rule over evs: each event is prepared once.
func (b *builtins) runShard(rs *ruleSet, sh *shard, evs []event.Access, preps []prep, ready *sync.WaitGroup) {
	n := len(evs)
	for i := sh.id * n / numShards; i < (sh.id+1)*n/numShards; i++ {
		b.prepare(&evs[i], &preps[i], &sh.ck)
	}
	ready.Done()
	ready.Wait()
	for i := range evs {
		sh.idx = int32(i)
		b.process(sh, &evs[i], &preps[i])
		rs.eval(b, sh, &evs[i], &preps[i])
	}
}

// applyFires turns the shards' recorded matches into alerts in event order
// and, within an event, in the order of the checks: the order does not
// depend on which shard owns which key.
func (e *Engine) applyFires(evs []event.Access) {
	var pos [numShards]int
	for {
		best := -1
		for s, sh := range e.b.shards {
			if pos[s] < len(sh.fires) && (best < 0 || sh.fires[pos[s]].before(&e.b.shards[best].fires[pos[best]])) {
				best = s
			}
		}
		if best < 0 {
			break
		}
		f := &e.b.shards[best].fires[pos[best]]
		pos[best]++
		e.fireAttrs(f.k, f.rule, f.sev, f.kind, f.val, f.val2, &evs[f.idx], f, f.n, nil)
	}
	for _, sh := range e.b.shards {
		clear(sh.fires) // drop the strings they hold
		sh.fires = sh.fires[:0]
	}
}

func (f *fireRec) before(o *fireRec) bool {
	return f.idx < o.idx || (f.idx == o.idx && f.ord < o.ord)
}

// unlockAndDeliver releases the engine lock and hands over new alerts.
func (e *Engine) unlockAndDeliver() {
	if len(e.pending) == 0 {
		e.mu.Unlock()
		return
	}
	out := append([]pendingAlert(nil), e.pending...)
	e.pending = e.pending[:0]
	e.mu.Unlock()
	e.deliver(out)
}

// maxBatch bounds how many queued events Run takes at once.
const maxBatch = 1024

// Run processes events from ch until ch is closed or ctx is done, flushing
// to the store (if any) every second and at the end. Events already queued
// in ch are taken in batches (see [Engine.ProcessBatch]); a lone event is
// processed at once.
func (e *Engine) Run(ctx context.Context, ch <-chan event.Access) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	batch := make([]event.Access, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			e.Flush(context.Background())
			return ctx.Err()
		case ev, ok := <-ch:
			if !ok {
				return e.Flush(ctx)
			}
			batch = append(batch[:0], ev)
			closed := false
		drain:
			for len(batch) < maxBatch {
				select {
				case ev, ok := <-ch:
					if !ok {
						closed = true
						break drain
					}
					batch = append(batch, ev)
				default:
					break drain
				}
			}
			e.ProcessBatch(batch)
			clear(batch) // drop references to the events' strings
			if closed {
				return e.Flush(ctx)
			}
		case <-tick.C:
			_ = e.Flush(ctx)
		}
	}
}

// Login records a login event for token_without_login; a zero at means now.
// The detector stays silent until the first login is fed.
func (e *Engine) Login(sid string, at time.Time) {
	if at.IsZero() {
		at = e.now()
	}
	e.mu.Lock()
	e.b.login(sid, at)
	e.mu.Unlock()
}

// SetKeyState tells revoked_or_retired_key a key's state since when: any use
// of a revoked or retired key alerts, and so does a token signed (iat) by a
// verify-only key after since.
func (e *Engine) SetKeyState(kid string, state keys.State, since time.Time) {
	e.mu.Lock()
	if state == keys.Active {
		delete(e.b.keyStates, kid)
	} else {
		e.b.keyStates[kid] = keyState{state, since.Unix()}
	}
	e.mu.Unlock()
}

// MarkDeparted tells departed_credential_use that a credential (a key id or a
// token subject, such as a staff member's) belongs to someone who left at at;
// any use after at alerts.
func (e *Engine) MarkDeparted(credential string, at time.Time) {
	e.mu.Lock()
	e.b.departed[maphash.String(e.seed, credential)] = departedCred{credential, at.UnixNano()}
	e.mu.Unlock()
}

// Raise records a finding made outside the event stream as an alert,
// deduplicated, grouped and contained like any other.
func (e *Engine) Raise(f Finding) {
	if f.Time.IsZero() {
		f.Time = e.now()
	}
	if f.Severity == "" {
		f.Severity = High
	}
	if f.Rule == "" {
		f.Rule = "external"
	}
	ev := event.Access{Time: f.Time, RequestID: f.EventID}
	e.mu.Lock()
	e.fireAttrs(alertKey(e.seed, f.Rule, f.Entity, "", ""), f.Rule, f.Severity, f.Entity, "", "", &ev, &fireRec{summary: f.Summary}, 1, f.Attrs)
	out := append([]pendingAlert(nil), e.pending...)
	e.pending = e.pending[:0]
	e.mu.Unlock()
	e.deliver(out)
}

// fireAttrs reports a match of rule for entity kind:val (and @val2 when set)
// at ev, adding n to its count; k is the match's [alertKey]. It allocates
// only when it raises a new alert.
func (e *Engine) fireAttrs(k uint64, rule string, s Severity, kind, val, val2 string, ev *event.Access, f *fireRec, n int64, attrs map[string]string) {
	sl := &e.slots[k&(numSlots-1)]
	if sl.a == nil || sl.k != k {
		a := e.open[k]
		if a == nil {
			*sl = openSlot{}
		} else {
			*sl = openSlot{k: k, a: a, until: a.Raised.Add(e.cfg.DedupWindow)}
		}
	}
	t := ev.Time
	if a := sl.a; a != nil && t.Before(sl.until) {
		if sl.incGen != e.incGen {
			sl.inc, sl.incGen = e.incByID[a.Incident], e.incGen
		}
		a.Count += n
		if t.After(a.LastSeen) {
			a.LastSeen = t
		}
		if t.Before(a.FirstSeen) {
			a.FirstSeen = t
		}
		if len(a.Samples) < e.cfg.SampleIDs && ev.RequestID != "" {
			a.Samples = append(a.Samples, ev.RequestID)
		}
		if e.persist && sl.dirtyGen != e.flushGen {
			e.dirtyA[a] = struct{}{}
			sl.dirtyGen = e.flushGen
		}
		if inc := sl.inc; inc != nil && t.After(inc.LastSeen) {
			inc.LastSeen = t
			if e.persist && sl.incDirty != e.flushGen {
				e.dirtyI[inc] = struct{}{}
				sl.incDirty = e.flushGen
			}
		}
		return
	}
	summary := f.text()
	entity := kind
	if val != "" {
		entity = kind + ":" + val
	}
	if val2 != "" {
		entity += "@" + val2
	}
	var idb [8]byte
	// The id names the rule, the entity and the dedup window the alert
	// opened in (aligned to multiples of the window): whoever raises it
	// (another detector instance, this one again after a restart replaying
	// unacknowledged events) raises the same id, and the store keeps one row.
	binary.BigEndian.PutUint64(idb[:], fnv(rule+"\x00"+entity+"\x00"+t.Truncate(e.cfg.DedupWindow).UTC().Format(time.RFC3339Nano)))
	a := &Alert{
		ID: "al-" + hex.EncodeToString(idb[:]), Rule: rule, Severity: s, Entity: entity,
		Summary: summary, FirstSeen: t, LastSeen: t, Raised: t, Count: n,
		Attrs: attrs,
	}
	if a.Attrs == nil {
		a.Attrs = eventAttrs(ev)
	}
	if ev.RequestID != "" {
		a.Samples = []string{ev.RequestID}
	}
	if kind == "net" {
		a.Attrs["network"] = val
	}
	e.open[k] = a
	e.storeAlert(k, a)
	e.group(a)
	*sl = openSlot{k: k, a: a, until: a.Raised.Add(e.cfg.DedupWindow)}
	p := e.policy(rule)
	c := *a
	c.Samples = append([]string(nil), a.Samples...)
	e.pending = append(e.pending, pendingAlert{a: c, policy: p})
	e.raised.Add(1)
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func eventAttrs(ev *event.Access) map[string]string {
	m := make(map[string]string, 8)
	add := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	add("kid", ev.Token.KID)
	add("jti", ev.Token.JTI)
	sub := ev.Subject
	if sub == "" {
		sub = ev.Token.Sub
	}
	add("subject", sub)
	add("token_sub", ev.Token.Sub)
	add("src_ip", ev.SrcIP)
	add("route", ev.Route)
	add("country", ev.Country)
	add("reason", string(ev.Reason))
	add("user_agent", ev.UserAgent)
	add("reported", ev.Reported)
	return m
}

func (e *Engine) policy(rule string) *ContainPolicy {
	if p, ok := e.cfg.Containment[rule]; ok {
		return &p
	}
	if r := e.rules.Load().byName(rule); r != nil && r.contain != nil {
		return r.contain
	}
	return nil
}

// storeAlert puts a, of dedup key k, into the bounded ring, evicting the
// oldest (and its dedup entry, unless a newer alert took the key).
func (e *Engine) storeAlert(k uint64, a *Alert) {
	if len(e.alerts) < e.cfg.MaxAlerts {
		e.alerts = append(e.alerts, a)
		e.alertKeys = append(e.alertKeys, k)
	} else {
		old, ok := e.alerts[e.alertNext], e.alertKeys[e.alertNext]
		delete(e.byID, old.ID)
		if e.open[ok] == old {
			delete(e.open, ok)
			if sl := &e.slots[ok&(numSlots-1)]; sl.a == old {
				*sl = openSlot{}
			}
		}
		e.alerts[e.alertNext], e.alertKeys[e.alertNext] = a, k
		e.alertNext = (e.alertNext + 1) % e.cfg.MaxAlerts
	}
	e.byID[a.ID] = a
	if e.persist {
		e.dirtyA[a] = struct{}{}
	}
	if len(e.open) > 2*e.cfg.MaxAlerts { // drop dedup entries of closed windows
		clear(e.slots[:])
		for k, v := range e.open {
			if _, ok := e.byID[v.ID]; !ok {
				delete(e.open, k)
			}
		}
	}
}

const (
	maxIncidentAlerts   = 1000
	maxIncidentEntities = 100
)

// group puts a into the open incident sharing its rule or entity, or a new one.
func (e *Engine) group(a *Alert) {
	var inc *Incident
	for _, key := range []string{"r\x00" + a.Rule, "e\x00" + a.Entity} {
		if c := e.incByKey[key]; c != nil && !a.Raised.After(c.LastSeen.Add(e.cfg.IncidentWindow)) {
			inc = c
			break
		}
	}
	if inc == nil {
		inc = &Incident{ID: "inc-" + a.ID[3:], Awareness: a.Raised, LastSeen: a.Raised, Severity: a.Severity}
		e.incGen++ // incByID changes
		if len(e.incidents) < e.cfg.MaxIncidents {
			e.incidents = append(e.incidents, inc)
		} else {
			old := e.incidents[e.incNext]
			delete(e.incByID, old.ID)
			for k, v := range e.incByKey {
				if v == old {
					delete(e.incByKey, k)
				}
			}
			e.incidents[e.incNext] = inc
			e.incNext = (e.incNext + 1) % e.cfg.MaxIncidents
		}
		e.incByID[inc.ID] = inc
	}
	e.incByKey["r\x00"+a.Rule] = inc
	e.incByKey["e\x00"+a.Entity] = inc
	a.Incident = inc.ID
	if a.Raised.After(inc.LastSeen) {
		inc.LastSeen = a.Raised
	}
	if sevRank[a.Severity] > sevRank[inc.Severity] {
		inc.Severity = a.Severity
	}
	if len(inc.Alerts) < maxIncidentAlerts {
		inc.Alerts = append(inc.Alerts, a.ID)
	}
	inc.Rules = addUnique(inc.Rules, a.Rule)
	if len(inc.Entities) < maxIncidentEntities {
		inc.Entities = addUnique(inc.Entities, a.Entity)
	}
	if e.persist {
		e.dirtyI[inc] = struct{}{}
	}
}

func addUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// deliver hands new alerts to subscribers and the stream, then carries out
// their containment, outside the engine lock.
func (e *Engine) deliver(out []pendingAlert) {
	if e.replaying.Load() {
		return
	}
	e.subMu.RLock()
	subs, c := e.subs, e.contain
	e.subMu.RUnlock()
	for _, p := range out {
		for _, fn := range subs {
			fn(p.a)
		}
		e.stream.publish(p.a)
		if p.policy != nil {
			e.contain1(c, &p.a, *p.policy)
		}
	}
}

// contain1 plans, rate-limits, carries out and records the actions of
// policy p for alert a.
func (e *Engine) contain1(c Containment, a *Alert, p ContainPolicy) {
	var limited []ActionRecord
	for _, act := range policyActions(p) {
		r, err := plan(a, p, act, e.b.home.has)
		if err == nil {
			e.mu.Lock()
			ok, first := e.limits.allow(act, e.now())
			e.mu.Unlock()
			if !ok {
				err = fmt.Errorf("%w: more than %d %s per %s", ErrRateLimited, e.limits.limits[act].Max, act, e.limits.limits[act].Per)
				if first {
					limited = append(limited, r)
				}
			}
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = execute(ctx, c, r)
			cancel()
		}
		if err != nil {
			r.Error = err.Error()
		}
		e.mu.Lock()
		if len(e.actions) >= e.cfg.MaxActions {
			e.actions = e.actions[1:]
		}
		e.actions = append(e.actions, r)
		if e.persist {
			e.dirtyX = append(e.dirtyX, r)
		}
		e.mu.Unlock()
	}
	for _, r := range limited {
		e.Raise(Finding{Rule: RuleContainmentRateLimited, Severity: High, Entity: "action:" + string(r.Action),
			Summary: fmt.Sprintf("%s not taken for alert %s (%s): more %s actions than the limit allows; the alert needs a person", r.Action, r.AlertID, r.Rule, r.Action),
			Attrs:   map[string]string{"action": string(r.Action), "target": r.Target, "alert_id": r.AlertID, "rule": r.Rule}})
	}
}

// Alerts returns the alerts, oldest first: those in the store when one is
// set (see [Engine.ListAlerts]), else those in memory. Should the store not
// answer, it returns those in memory.
func (e *Engine) Alerts() []Alert {
	if e.store() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		as, err := e.ListAlerts(ctx, AlertQuery{})
		cancel()
		if err == nil {
			slices.Reverse(as)
			return as
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, len(e.alerts))
	for i := range e.alerts {
		a := e.alerts[(e.alertNext+i)%len(e.alerts)]
		c := *a
		c.Samples = append([]string(nil), a.Samples...)
		out = append(out, c)
	}
	return out
}

// readTimeout bounds the store reads of the methods without a context.
const readTimeout = 5 * time.Second

// Incidents returns the incidents, oldest first, from the store when one is
// set (as [Engine.Alerts]).
func (e *Engine) Incidents() []Incident {
	if e.store() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		is, err := e.ListIncidents(ctx, 0)
		cancel()
		if err == nil {
			slices.Reverse(is)
			return is
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Incident, 0, len(e.incidents))
	for i := range e.incidents {
		out = append(out, copyIncident(e.incidents[(e.incNext+i)%len(e.incidents)]))
	}
	return out
}

// Incident returns the incident with id, from the store when one is set (as
// [Engine.Alerts]).
func (e *Engine) Incident(id string) (Incident, bool) {
	if e.store() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		inc, _, ok, err := e.FindIncident(ctx, id)
		cancel()
		if err == nil {
			return inc, ok
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	inc, ok := e.incByID[id]
	if !ok {
		return Incident{}, false
	}
	return copyIncident(inc), true
}

func copyIncident(inc *Incident) Incident {
	c := *inc
	c.Rules = append([]string(nil), inc.Rules...)
	c.Entities = append([]string(nil), inc.Entities...)
	c.Alerts = append([]string(nil), inc.Alerts...)
	return c
}

// Actions returns the containment actions recorded, oldest first.
func (e *Engine) Actions() []ActionRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]ActionRecord(nil), e.actions...)
}

func (e *Engine) String() string { return fmt.Sprintf("detect.Engine(%d events)", e.Events()) }
