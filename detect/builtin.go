package detect

import (
	"hash/maphash"
	"net/netip"
	"strconv"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/keys"
)

// Source dimensions for enumeration.
const (
	dimIP = iota
	dimNet
	dimASN
	dimUA
	dimKID
	numDims
)

var dimKind = [numDims]string{"ip", "net", "asn", "ua", "kid"}

const walkLanes = 4

type lane struct {
	last  int64
	run   uint32
	used  uint32 // walker.clock when last extended
	start uint32 // unix seconds of the run's first step
}

// walker follows near-sequential member IDs: a few lanes, so that
// interleaved ordinary traffic does not break a walk, each a run that counts
// only within a time span of its first step. Without the span, a key that
// many people share (a popular user agent, a busy block of IDs) would
// gather a long run by chance over weeks.
type walker struct {
	clock uint32
	fired uint8 // bit i: lanes[i] has alerted
	lanes [walkLanes]lane
}

// srcState is what enumeration and unknown_subject_rate keep per source key
// of one dimension: one lookup serves both.
type srcState struct {
	enum enumState
	unk  unknownState
}

// subjState is what foreign_origin (history) and ip_rotation (per subject)
// keep per subject.
type subjState struct {
	hist histState
	rot  rotState
}

type enumState struct {
	wd   windowDistinct
	next uint64 // sum at which to compute the union again
	walk walker
}

type unknownState = ratioCount

type histState struct {
	countries [4][2]byte
	n         uint8
	total     uint32
}

type rotState struct {
	wd   windowDistinct
	next uint64
}

// spreadState is what foreign_spread keeps per country: the distinct
// subjects read from it within the window, each with when it was last read,
// at most the threshold of them.
type spreadState struct {
	seen  []spreadEntry
	fired bool // the threshold was reached and not since fallen below
}

type spreadEntry struct {
	subj uint64 // hash of the subject
	t    int64  // unix nanoseconds of its last read
}

// covState is what id_coverage keeps per block of the member-ID space: its
// distinct IDs per window, and the walks through it by any source.
type covState struct {
	rotState
	walk walker
}

const hoursPerWeek = 168

type volState struct {
	hour    int64 // hour index (unix hours) being counted
	count   uint32
	fired   bool
	base    [hoursPerWeek]float32
	seen    [hoursPerWeek]uint16
	learned uint32
	sum     float64 // sum of learned slot baselines
	slots   uint32  // learned slots
}

type keyState struct {
	state keys.State
	since int64 // unix seconds
}

type departedCred struct {
	name string
	at   int64 // unix nanoseconds
}

// numShards is how many goroutines share the per-key state: every table
// is split by the top bit of its key's hash, and each shard owns one half.
const numShards = 2

func ownerOf(k uint64) int { return int(k >> 63) }

// builtins holds the state of the ten built-in detectors. The maps below
// are read-only while events are processed; per-key state is in shards.
type builtins struct {
	cfg  *Config
	seed maphash.Seed

	decoys     map[string]bool
	keyStates  map[string]keyState
	departed   map[uint64]departedCred
	enumHalf   int64
	enumSpan   uint32 // enumeration window, seconds: a walk's span
	covSpan    uint32 // id_coverage window, seconds
	enumThr    [numDims]uint64
	unkRoutes  map[string]bool
	allowed    *countrySet
	routeAllow map[string]*countrySet
	home       *countrySet // allowed on any route: block_country never blocks these
	rotHalf    int64
	covHalf    int64
	firstLogin int64
	sessionOf  func(*event.Access) string
	shards     [numShards]*shard
	preps      []prep // a batch's prepared events, shared by the shards
}

// shard is the per-key state one goroutine owns: the keys whose hash has
// its index in the top bit.
type shard struct {
	id       int
	seed     maphash.Seed               // of dedup keys (alertKey)
	src      [numDims]*genMap[srcState] // enumeration and unknown_subject_rate
	subj     *genMap[subjState]         // foreign_origin history and ip_rotation per subject
	rot      [3]*genMap[rotState]       // ip_rotation per token and fingerprint ([1] unused)
	srcSk    [numDims]sketches          // the sketches of src's values
	subjSk   sketches
	rotSk    [3]sketches
	volume   *genMap[volState]
	cov      *genMap[covState] // id_coverage per block of the member-ID space
	covSk    sketches
	covBase  float64 // id_coverage: EWMA of a block's distinct IDs per half-window
	covN     uint32  // samples in covBase, while fewer than 1/covAlpha
	sessions *genMap[int64]
	spread   [26 * 26]*spreadState // foreign_spread per country code, allocated on first use
	scratch  *hll
	ck       clocks
	act      activation
	p        prep           // the event being processed, kept here so that it does not escape
	idx      int32          // index of the event in its batch
	ord      uint32         // position of the running check; see fireRec
	fires    []fireRec      // matches of the current batch, in order
	keys     [128]keyMemo   // the last dedup key computed per check (ord % 128)
	nets     [16]netText    // text of networks named in matches, by hash
	asns     [16]asnText    // likewise for ASNs, by number
	blocks   [256]blockText // likewise for blocks of member IDs, by number
}

type blockText struct {
	block uint64
	s     string
	k     uint64 // alertKey of id_coverage for the block
}

type netText struct {
	p netip.Prefix
	s string
}

type asnText struct {
	n uint32
	s string
}

// prep is what every detector needs from an event, computed once per event.
type prep struct {
	t         int64
	subject   string
	hasIP     bool
	network   netip.Prefix
	netKey    uint64
	ipHash    uint64 // of the src_ip string
	jtiHash   uint64 // of token.jti
	subHash   uint64 // of token.sub
	routeHash uint64
	subjHash  uint64
	subjNum   int64
	subjIsNum bool
	dimKeys   [numDims]uint64
	dimOK     [numDims]bool
	own       uint64 // decides the shard of checks without per-key state
	enumB     int64  // half-window of enumeration
	rotB      int64  // half-window of ip_rotation
	unkB      int64  // window of unknown_subject_rate
	covB      int64  // half-window of id_coverage
	unkFrac   float64
}

// bucketer divides event times by a window length, remembering the last
// quotient: events arrive in time order, so most need no division.
type bucketer struct {
	h, start, b int64
	ok          bool // b is t/h for every t in [start, start+h)
}

func newBucketer(h int64) bucketer { return bucketer{h: h} }

func (k *bucketer) of(t int64) int64 {
	if k.ok && t >= k.start && t-k.start < k.h {
		return k.b
	}
	k.b = t / k.h
	k.start, k.ok = k.b*k.h, t >= 0 // below zero, / truncates toward zero
	return k.b
}

// clocks are the bucketers of a shard's prepare.
type clocks struct {
	enum, rot, unk, cov bucketer
}

func perShard(max int) int { return (max + numShards - 1) / numShards }

func newBuiltins(cfg *Config, seed maphash.Seed) *builtins {
	b := &builtins{
		cfg: cfg, seed: seed,
		decoys:     make(map[string]bool),
		keyStates:  make(map[string]keyState),
		departed:   make(map[uint64]departedCred),
		enumHalf:   int64(cfg.Enumeration.Window / 2),
		rotHalf:    int64(cfg.IPRotation.Window / 2),
		covHalf:    int64(cfg.IDCoverage.Window / 2),
		enumSpan:   uint32(cfg.Enumeration.Window / time.Second),
		covSpan:    uint32(cfg.IDCoverage.Window / time.Second),
		unkRoutes:  make(map[string]bool),
		allowed:    newCountrySet(cfg.ForeignOrigin.Allowed),
		routeAllow: make(map[string]*countrySet),
	}
	keys := perShard(cfg.MaxKeys)
	for i := range b.shards {
		sh := &shard{
			id:       i,
			seed:     seed,
			subj:     newGenMap[subjState](keys),
			volume:   newGenMap[volState](perShard(cfg.RouteVolume.MaxRoutes)),
			sessions: newGenMap[int64](keys * 64),
		}
		sh.scratch = new(hll)
		sh.ck = clocks{enum: newBucketer(b.enumHalf), rot: newBucketer(b.rotHalf), unk: newBucketer(int64(cfg.UnknownSubject.Window)), cov: newBucketer(b.covHalf)}
		for d := range sh.src {
			sh.src[d] = newGenMap[srcState](keys)
			sweepOnDrop(sh.src[d], &sh.srcSk[d], func(v *srcState) *windowDistinct { return &v.enum.wd })
		}
		sweepOnDrop(sh.subj, &sh.subjSk, func(v *subjState) *windowDistinct { return &v.rot.wd })
		sh.cov = newGenMap[covState](keys)
		sweepOnDrop(sh.cov, &sh.covSk, func(v *covState) *windowDistinct { return &v.wd })
		for _, i := range []int{0, 2} {
			sh.rot[i] = newGenMap[rotState](keys)
			sweepOnDrop(sh.rot[i], &sh.rotSk[i], func(v *rotState) *windowDistinct { return &v.wd })
		}
		b.shards[i] = sh
	}
	en := &cfg.Enumeration
	b.enumThr = [numDims]uint64{en.Threshold, en.PerNetwork, en.PerASN, en.PerUserAgent, en.PerKeyID}
	for _, s := range cfg.DecoySubject.Subjects {
		b.decoys[s] = true
	}
	for _, r := range cfg.UnknownSubject.Routes {
		b.unkRoutes[r] = true
	}
	home := append([]string(nil), cfg.ForeignOrigin.Allowed...)
	for r, cs := range cfg.ForeignOrigin.Routes {
		b.routeAllow[r] = newCountrySet(cs)
		home = append(home, cs...)
	}
	b.home = newCountrySet(home)
	return b
}

func (b *builtins) hs(s string) uint64 { return maphash.String(b.seed, s) }

// prepare computes what the detectors share for ev.
func (b *builtins) prepare(ev *event.Access, p *prep, ck *clocks) {
	*p = prep{t: ev.Time.UnixNano(), subject: ev.Subject, ipHash: b.hs(ev.SrcIP)}
	p.enumB, p.rotB, p.unkB, p.covB = ck.enum.of(p.t), ck.rot.of(p.t), ck.unk.of(p.t), ck.cov.of(p.t)
	h := ck.unk.h
	p.unkFrac = float64(h-(p.t-p.unkB*h)) / float64(h)
	if p.subject == "" {
		p.subject = ev.Token.Sub
	}
	if ip, err := netip.ParseAddr(ev.SrcIP); err == nil {
		p.hasIP = true
		p.network = netOf(ip)
		a := p.network.Addr().As16()
		p.netKey = mix(uint64(a[0])<<56|uint64(a[1])<<48|uint64(a[2])<<40|uint64(a[3])<<32|uint64(a[4])<<24|uint64(a[5])<<16|uint64(a[12])<<8|uint64(a[13])) ^ mix(uint64(a[14]))
		p.dimKeys[dimIP], p.dimOK[dimIP] = mix(p.netKey^p.ipHash), true
		p.dimKeys[dimNet], p.dimOK[dimNet] = p.netKey, true
	}
	if p.subject != "" {
		p.subjHash = b.hs(p.subject)
		p.subHash = p.subjHash
		if n, err := strconv.ParseInt(p.subject, 10, 64); err == nil {
			p.subjNum, p.subjIsNum = n, true
		}
	}
	if ev.Token.Sub != p.subject && ev.Token.Sub != "" {
		p.subHash = b.hs(ev.Token.Sub)
	}
	if ev.Token.JTI != "" {
		p.jtiHash = b.hs(ev.Token.JTI)
	}
	if ev.Route != "" {
		p.routeHash = b.hs(ev.Route)
	}
	if ev.ASN != 0 {
		p.dimKeys[dimASN], p.dimOK[dimASN] = mix(uint64(ev.ASN)), true
	}
	if ev.UserAgent != "" {
		p.dimKeys[dimUA], p.dimOK[dimUA] = b.hs(ev.UserAgent), true
	}
	if ev.Token.KID != "" {
		p.dimKeys[dimKID], p.dimOK[dimKID] = b.hs(ev.Token.KID), true
	}
	p.own = mix(p.dimKeys[dimIP] ^ p.subjHash ^ uint64(p.t))
}

// process runs the built-in detectors over ev for the keys shard sh owns,
// in their fixed order (sh.ord numbers each check, so that matches of a
// batch apply in the order one-at-a-time processing would give them).
// Checks without per-key state run on the shard that owns p.own; the others
// on the shard that owns their key.
func (b *builtins) process(sh *shard, ev *event.Access, p *prep) {
	c := b.cfg
	stateless := ownerOf(p.own) == sh.id
	if stateless {
		// A reason in an event read from a log is the log's claim: custos
		// did not check the signature, so a claimed not_issued is a lower
		// finding of its own, and claimed key or decoy reasons count for
		// nothing beyond what custos knows itself.
		claimed := ev.Reported != ""
		if ev.Reason == event.ReasonNotIssued {
			switch {
			case !claimed && !c.NotIssued.Disabled:
				b.notIssued(sh, ev)
			case claimed && !c.ReportedNotIssued.Disabled:
				b.reportedNotIssued(sh, ev)
			}
		}
		if !c.DecoySubject.Disabled && ((!claimed && ev.Reason == event.ReasonDecoySubject) || (len(b.decoys) > 0 && b.decoys[p.subject])) {
			b.decoySubject(sh, ev)
		}
		if !c.RevokedKey.Disabled && ev.Token.KID != "" {
			b.revokedKey(sh, ev, claimed)
		}
		if !c.DepartedCred.Disabled && len(b.departed) > 0 {
			b.departedCred(sh, ev, p)
		}
	}
	var srcv [numDims]*srcState // looked up already (valid until the next get of its dimension)
	if !c.Enumeration.Disabled && p.subject != "" {
		b.enumeration(sh, ev, p, &srcv)
	}
	if !c.UnknownSubject.Disabled && ev.Subject != "" && (len(b.unkRoutes) == 0 || b.unkRoutes[ev.Route]) {
		b.unknownSubject(sh, ev, p, &srcv)
	}
	var subjv *subjState // sh.subj's entry for p.subjHash, once looked up
	if !c.ForeignOrigin.Disabled && ev.Country != "" && (ev.Subject != "" || len(ev.DataClasses) > 0) {
		subjv = b.foreignOrigin(sh, ev, p, stateless)
	}
	if !c.IPRotation.Disabled && p.hasIP {
		b.ipRotation(sh, ev, p, subjv)
	}
	if !c.RouteVolume.Disabled && ev.Route != "" {
		if k := p.routeHash; ownerOf(k) == sh.id {
			sh.ord = 60
			b.volumeOf(sh, k, ev, p.t)
		}
	}
	if !c.TokenWithoutLogin.Disabled && b.firstLogin != 0 {
		sh.ord = 70
		b.checkLogin(sh, ev, p)
	}
	if !c.IDCoverage.Disabled && p.subjIsNum && p.subjNum >= 0 {
		b.idCoverage(sh, p)
	}
	if !c.ForeignSpread.Disabled && ev.Verdict == event.Allow && ev.Reason == "" && ev.Reported == "" &&
		ev.Token.JTI != "" && p.subject != "" && (ev.Subject != "" || len(ev.DataClasses) > 0) && len(ev.Country) == 2 {
		b.foreignSpread(sh, ev, p)
	}
}

// allowedFor is the allowed set of countries of route.
func (b *builtins) allowedFor(route string) *countrySet {
	if len(b.routeAllow) > 0 {
		if m, ok := b.routeAllow[route]; ok {
			return m
		}
	}
	return b.allowed
}

// foreignSpread (check 12): customer data of many distinct subjects read
// from one country outside the allowed set within the window, with tokens
// that passed every check. It keys its state by the country: an attacker
// replaying real tokens over many networks, ASNs and user agents of one
// country is still one key.
func (b *builtins) foreignSpread(sh *shard, ev *event.Access, p *prep) {
	cc := ev.Country
	if !IsCountryCode(cc) || b.allowedFor(ev.Route).has(cc) {
		return
	}
	i := int(cc[0]-'A')*26 + int(cc[1]-'A')
	if ownerOf(mix(uint64(i)^0x737072656164)) != sh.id { // "spread": apart from other integer keys
		return
	}
	c := &b.cfg.ForeignSpread
	sh.ord = 90
	s := sh.spread[i]
	if s == nil {
		s = &spreadState{}
		sh.spread[i] = s
	}
	win, thr := int64(c.Window), int(c.Threshold)
	found := false
	n := 0
	for _, e := range s.seen {
		if p.t-e.t >= win {
			continue // left the window
		}
		if e.subj == p.subjHash {
			found = true
			e.t = max(e.t, p.t)
		}
		s.seen[n] = e
		n++
	}
	s.seen = s.seen[:n]
	if !found && n < thr {
		s.seen = append(s.seen, spreadEntry{subj: p.subjHash, t: p.t})
	}
	if len(s.seen) < thr {
		s.fired = false
		return
	}
	summary := ""
	if !s.fired {
		s.fired = true
		summary = "customer data of " + strconv.Itoa(thr) + " distinct subjects read from " + cc + " within " + c.Window.String() + " with tokens that passed every check"
	}
	sh.fire(RuleForeignSpread, c.Severity, "country", cc, "", summary, 1)
}

// idCoverage (check 11): one block of the member-ID space read widely within
// the window, whoever reads it. Requests count whatever their verdict: a
// refused crawl is still a crawl.
func (b *builtins) idCoverage(sh *shard, p *prep) {
	c := &b.cfg.IDCoverage
	block := uint64(p.subjNum) / c.Block
	k := mix(block ^ 0x636f766572616765) // "coverage": apart from other integer keys
	if ownerOf(k) != sh.id {
		return
	}
	sh.ord = 80
	s := sh.cov.get(k)
	if s.wd.bucket != p.covB && s.wd.bucket != 0 {
		// The block's half-window closes: its count is one sample of how
		// widely customers read a block. Capped, so that crawled blocks
		// cannot lift the baseline far.
		n := float64(min(s.wd.cur.count(&sh.covSk), c.Threshold/4))
		a := covAlpha
		if sh.covN < 1/covAlpha { // the plain mean of the first samples
			sh.covN++
			a = 1 / float64(sh.covN)
		}
		sh.covBase += a * (n - sh.covBase)
	}
	walked := false
	if e := &b.cfg.Enumeration; !e.NoWalk {
		// A walk through the block by any source, however many sources
		// take turns and however slowly each goes.
		if run, i := s.walk.step(p.subjNum, p.t, e.WalkGap, b.covSpan); run >= e.WalkRun {
			summary := ""
			if s.walk.alerts(i) {
				summary = "walk through " + strconv.FormatUint(uint64(run), 10) + " near-sequential member IDs of one block within " + c.Window.String() + ", by any source"
			}
			sh.fireBlock(c.Severity, block, c.Block, summary, 1)
			walked = true
		}
	}
	sum := s.wd.add(p.covB, p.subjHash, &sh.covSk, k)
	thr := max(c.Threshold, uint64(covFactor*2*sh.covBase))
	if sum < thr || walked { // a walk's match already counts this event
		return
	}
	if s.wd.fired != 0 && s.wd.fired >= p.covB-1 {
		sh.fireBlock(c.Severity, block, c.Block, "", 1)
		return
	}
	if sum < s.next {
		return
	}
	if u := s.wd.union(&sh.covSk, sh.scratch); u >= thr {
		s.wd.fired = p.covB
		sh.fireBlock(c.Severity, block, c.Block,
			strconv.FormatUint(u, 10)+" distinct member IDs of one block read within "+c.Window.String()+", by any source", int64(u))
	} else {
		s.next = sum + thr/32 + 1
	}
}

// id_coverage's baseline: a block must be read covFactor times as widely as
// blocks are in a window (two half-windows) before it counts, and never
// less than the configured threshold. Samples are capped at a quarter of the
// threshold, so the bar rises to at most twice the threshold.
const (
	covFactor = 4.0
	covAlpha  = 0.01
)

// entity is what a match without per-key state is about: the signing key,
// or the source address when the token named none.
func entity(ev *event.Access) (kind, val string) {
	if ev.Token.KID == "" {
		return "ip", ev.SrcIP
	}
	return "kid", ev.Token.KID
}

// notIssued (check 1): a validly signed token that the authority never issued.
func (b *builtins) notIssued(sh *shard, ev *event.Access) {
	k, v := entity(ev)
	sh.ord = 1
	sh.fire(RuleNotIssued, b.cfg.NotIssued.Severity, k, v, "", "validly signed token that the authority never issued", 1)
}

// reportedNotIssued (check 1, for an event read from a log): the log claims
// not_issued; custos checked no signature, so it is a finding of its own,
// never the critical not_issued one.
func (b *builtins) reportedNotIssued(sh *shard, ev *event.Access) {
	k, v := entity(ev)
	sh.ord = 1
	sh.fire(RuleReportedNotIssued, b.cfg.ReportedNotIssued.Severity, k, v, "", "a log reports a token the authority never issued; its signature was not checked by custos", 1)
}

// decoySubject (check 2): a request for a member ID no real customer has.
// With an issued token the alert is about that token (each token that
// touches a decoy gets its own alert, and its own containment); with a
// forged one, about its key.
func (b *builtins) decoySubject(sh *shard, ev *event.Access) {
	k, v := entity(ev)
	if ev.Token.JTI != "" && ev.Reason != event.ReasonNotIssued {
		k, v = "jti", ev.Token.JTI
	}
	sh.ord = 2
	sh.fire(RuleDecoySubject, b.cfg.DecoySubject.Severity, k, v, "", "request for a decoy member", 1)
}

// revokedKey (check 3): a token signed by a key that should no longer sign,
// by the gateway's reason (not a log's claim) or by the key's state as
// detection knows it.
func (b *builtins) revokedKey(sh *shard, ev *event.Access, claimed bool) {
	kid := ev.Token.KID
	bad := !claimed && ev.Reason == event.ReasonRevokedKey
	if !bad && len(b.keyStates) > 0 {
		if ks, ok := b.keyStates[kid]; ok {
			switch ks.state {
			case keys.Revoked, keys.Retired:
				bad = ev.Time.Unix() >= ks.since
			case keys.VerifyOnly:
				bad = ev.Token.IAT > ks.since
			}
		}
	}
	if bad {
		sh.ord = 3
		sh.fire(RuleRevokedKey, b.cfg.RevokedKey.Severity, "kid", kid, "", "token signed by a key that should no longer sign", 1)
	}
}

// departedCred (check 4): a key or token subject of someone who has left.
func (b *builtins) departedCred(sh *shard, ev *event.Access, p *prep) {
	for j, cred := range [2]string{ev.Token.KID, ev.Token.Sub} {
		sh.ord = 4 + uint32(j)
		if cred == "" {
			continue
		}
		if d, ok := b.departed[b.hs(cred)]; ok && d.name == cred && p.t >= d.at {
			sh.fire(RuleDepartedCred, b.cfg.DepartedCred.Severity, "credential", cred, "", "credential of someone who has left used", 1)
		}
	}
}

// enumeration (check 5): one source, in each dimension, touching many
// distinct subjects within the window, or walking near-sequential IDs.
func (b *builtins) enumeration(sh *shard, ev *event.Access, p *prep, srcv *[numDims]*srcState) {
	c := &b.cfg.Enumeration
	bucket := p.enumB
	for d := 0; d < numDims; d++ {
		thr := b.enumThr[d]
		// Walks are followed per address and network, and per ASN or user
		// agent only where that dimension has a threshold: populations share
		// those, and an attacker multiplies them at will.
		walks := !c.NoWalk && (d <= dimNet || (thr > 0 && d != dimKID))
		if !p.dimOK[d] || ownerOf(p.dimKeys[d]) != sh.id || (thr == 0 && !walks) {
			continue
		}
		sh.ord = 10 + 2*uint32(d)
		v := sh.src[d].get(p.dimKeys[d])
		srcv[d] = v
		s := &v.enum
		var sum uint64
		if thr > 0 {
			sum = s.wd.add(bucket, p.subjHash, &sh.srcSk[d], p.dimKeys[d])
		}
		if thr > 0 && sum >= thr {
			if s.wd.fired >= bucket-1 && s.wd.fired != 0 {
				sh.fire(RuleEnumeration, c.Severity, dimKind[d], sh.dimValue(d, ev, p.network), "", "one source touching many distinct subjects", 1)
			} else if sum >= s.next {
				if u := s.wd.union(&sh.srcSk[d], sh.scratch); u >= thr {
					s.wd.fired = bucket
					sh.fire(RuleEnumeration, c.Severity, dimKind[d], sh.dimValue(d, ev, p.network), "",
						"one source touched "+strconv.FormatUint(u, 10)+" distinct subjects within "+c.Window.String(), int64(u))
				} else {
					s.next = sum + thr/32 + 1
				}
			}
		}
		if p.subjIsNum && walks {
			sh.ord = 11 + 2*uint32(d)
			b.walk(sh, s, d, p.subjNum, p.t, ev, p.network)
		}
	}
}

// unknownSubject (check 6): a burst of not-found answers on subject-bound
// routes from one network, ASN or key.
func (b *builtins) unknownSubject(sh *shard, ev *event.Access, p *prep, srcv *[numDims]*srcState) {
	c := &b.cfg.UnknownSubject
	nf := ev.Status == 404
	for _, d := range [...]int{dimNet, dimASN, dimKID} {
		if !p.dimOK[d] || ownerOf(p.dimKeys[d]) != sh.id {
			continue
		}
		sh.ord = 30 + uint32(d)
		v := srcv[d]
		if v == nil {
			v = sh.src[d].get(p.dimKeys[d])
		}
		s := &v.unk
		n, all := s.add(p.unkB, p.unkFrac, nf)
		if nf && n >= c.MinCount && float64(n) >= c.MinRatio*float64(all) {
			if !s.fired {
				s.fired = true
				sh.fire(RuleUnknownSubject, c.Severity, dimKind[d], sh.dimValue(d, ev, p.network), "",
					"burst of not-found answers on subject-bound routes: "+strconv.FormatUint(uint64(n), 10)+" of "+strconv.FormatUint(uint64(all), 10), int64(n))
			} else {
				sh.fire(RuleUnknownSubject, c.Severity, dimKind[d], sh.dimValue(d, ev, p.network), "", "", 1)
			}
		} else if n < c.MinCount/2 {
			s.fired = false
		}
	}
}

// foreignOrigin (check 7): customer data requested from outside the allowed
// countries, or from a country outside the subject's own history. It returns
// the subject's state when it looked it up, for ipRotation to reuse.
func (b *builtins) foreignOrigin(sh *shard, ev *event.Access, p *prep, stateless bool) *subjState {
	c := &b.cfg.ForeignOrigin
	if !b.allowedFor(ev.Route).has(ev.Country) {
		if stateless {
			sh.ord = 40
			sh.fire(RuleForeignOrigin, c.Severity, "country", ev.Country, ev.Route, "customer data requested from outside the allowed countries", 1)
		}
		return nil
	}
	if c.NoHistory || p.subject == "" || len(ev.Country) != 2 || ownerOf(p.subjHash) != sh.id {
		return nil
	}
	sh.ord = 41
	subjv := sh.subj.get(p.subjHash)
	h := &subjv.hist
	cc := [2]byte{ev.Country[0], ev.Country[1]}
	known := false
	for i := uint8(0); i < h.n; i++ {
		if h.countries[i] == cc {
			known = true
			break
		}
	}
	if !known {
		if h.total >= c.HistoryMin {
			sh.fire(RuleForeignOrigin, c.Severity, "subject", p.subject, ev.Country, "subject accessed from a country outside its own history", 1)
		}
		if h.n < uint8(len(h.countries)) {
			h.countries[h.n] = cc
			h.n++
		}
	}
	h.total++
	return subjv
}

// ipRotation (check 8): one token, subject or client fingerprint seen from
// many networks within the window. subjv is the subject's state if
// foreignOrigin looked it up.
func (b *builtins) ipRotation(sh *shard, ev *event.Access, p *prep, subjv *subjState) {
	c := &b.cfg.IPRotation
	bucket := p.rotB
	if ev.Token.JTI != "" {
		b.rotate(sh, 0, "jti", ev.Token.JTI, p.jtiHash, c.PerToken, bucket, p.netKey, nil)
	}
	if ev.Token.Sub != "" {
		if p.subHash != p.subjHash {
			subjv = nil
		}
		b.rotate(sh, 1, "subject", ev.Token.Sub, p.subHash, c.PerSubject, bucket, p.netKey, subjv)
	}
	if c.PerFingerprint > 0 && ev.UserAgent != "" {
		b.rotate(sh, 2, "fingerprint", ev.UserAgent, p.dimKeys[dimUA], c.PerFingerprint, bucket, p.netKey, nil)
	}
}

// countrySet is a set of country codes: a bit per two-byte code (ISO 3166
// alpha-2), so that the check costs no hashing; other codes in a map.
type countrySet struct {
	two   [1 << 16 / 64]uint64
	other map[string]bool
}

func newCountrySet(codes []string) *countrySet {
	s := &countrySet{other: make(map[string]bool)}
	for _, c := range codes {
		if len(c) == 2 {
			x := uint16(c[0])<<8 | uint16(c[1])
			s.two[x>>6] |= 1 << (x & 63)
		} else {
			s.other[c] = true
		}
	}
	return s
}

func (s *countrySet) has(c string) bool {
	if len(c) == 2 {
		x := uint16(c[0])<<8 | uint16(c[1])
		return s.two[x>>6]&(1<<(x&63)) != 0
	}
	return len(s.other) > 0 && s.other[c]
}

// dimValue is [dimValue], remembering the text of recent networks and
// ASNs, so that sources that keep matching are not formatted again.
func (sh *shard) dimValue(d int, ev *event.Access, network netip.Prefix) string {
	switch d {
	case dimNet:
		a := network.Addr().As16()
		c := &sh.nets[(a[12]^a[13]^a[14]^a[7])%uint8(len(sh.nets))]
		if c.p != network || c.s == "" {
			c.p, c.s = network, network.String()
		}
		return c.s
	case dimASN:
		c := &sh.asns[ev.ASN%uint32(len(sh.asns))]
		if c.n != ev.ASN || c.s == "" {
			c.n, c.s = ev.ASN, strconv.FormatUint(uint64(ev.ASN), 10)
		}
		return c.s
	}
	return dimValue(d, ev, network)
}

// fireBlock records an id_coverage match of block (of size ids) of the
// member-ID space. The block's text and dedup key are remembered for
// blocks that keep matching.
func (sh *shard) fireBlock(s Severity, block, ids uint64, summary string, n int64) {
	c := &sh.blocks[block%uint64(len(sh.blocks))]
	if c.block != block || c.s == "" {
		lo := block * ids
		c.block, c.s = block, strconv.FormatUint(lo, 10)+"-"+strconv.FormatUint(lo+ids-1, 10)
		c.k = alertKey(sh.seed, RuleIDCoverage, "id_block", c.s, "")
	}
	sh.fires = append(sh.fires, fireRec{idx: sh.idx, ord: sh.ord, k: c.k, rule: RuleIDCoverage, sev: s, kind: "id_block", val: c.s, summary: summary, n: n})
}

// dimValue returns the text of ev's source in dimension d.
func dimValue(d int, ev *event.Access, network netip.Prefix) string {
	switch d {
	case dimIP:
		return ev.SrcIP
	case dimNet:
		return network.String()
	case dimASN:
		return strconv.FormatUint(uint64(ev.ASN), 10)
	case dimUA:
		return ev.UserAgent
	}
	return ev.Token.KID
}

// walk follows near-sequential member IDs from one source, within the
// enumeration window.
func (b *builtins) walk(sh *shard, s *enumState, d int, id int64, t int64, ev *event.Access, network netip.Prefix) {
	c := &b.cfg.Enumeration
	run, i := s.walk.step(id, t, c.WalkGap, b.enumSpan)
	if run < c.WalkRun {
		return
	}
	summary := ""
	if s.walk.alerts(i) {
		summary = "walk through " + strconv.FormatUint(uint64(run), 10) + " near-sequential member ids"
	}
	sh.fire(RuleSequentialWalk, c.Severity, dimKind[d], sh.dimValue(d, ev, network), "", summary, 1)
}

// step adds id, seen at t (unix nanoseconds): it extends the lane whose last
// ID is at most gap away (restarting its run when the run's first step is
// more than span seconds old), or replaces the shortest, least recently
// used lane. It returns the extended lane's run and index (run 0 when id
// started a lane or repeated one).
func (w *walker) step(id, t int64, gap int64, span uint32) (run uint32, li int) {
	now := uint32(t / int64(time.Second))
	w.clock++
	best, victim := -1, 0
	for i := range w.lanes {
		l := &w.lanes[i]
		diff := id - l.last
		if diff < 0 {
			diff = -diff
		}
		if l.run > 0 || l.last != 0 {
			if diff == 0 {
				return 0, i
			}
			if diff <= gap {
				best = i
				break
			}
		}
		if v := &w.lanes[victim]; l.run < v.run || (l.run == v.run && l.used < v.used) {
			victim = i
		}
	}
	if best < 0 {
		w.lanes[victim] = lane{last: id, used: w.clock, start: now}
		w.fired &^= 1 << victim
		return 0, victim
	}
	l := &w.lanes[best]
	l.last, l.used = id, w.clock
	if now-l.start > span {
		l.start, l.run = now, 0
		w.fired &^= 1 << best
	}
	l.run++
	return l.run, best
}

// alerts marks lane i as having alerted and reports whether it had not yet.
func (w *walker) alerts(i int) bool {
	bit := uint8(1) << i
	first := w.fired&bit == 0
	w.fired |= bit
	return first
}

// rotate runs ip_rotation for key k of kind i; subj, when not nil, is
// sh.subj's entry for k.
func (b *builtins) rotate(sh *shard, i int, kind, val string, k, thr uint64, bucket int64, netKey uint64, subj *subjState) {
	if ownerOf(k) != sh.id {
		return
	}
	sh.ord = 50 + uint32(i)
	var s *rotState
	sk := &sh.rotSk[i]
	if i == 1 {
		if subj == nil {
			subj = sh.subj.get(k)
		}
		s, sk = &subj.rot, &sh.subjSk
	} else {
		s = sh.rot[i].get(k)
	}
	sum := s.wd.add(bucket, netKey, sk, k)
	if sum < thr {
		return
	}
	if s.wd.fired != 0 && s.wd.fired >= bucket-1 {
		sh.fire(RuleIPRotation, b.cfg.IPRotation.Severity, kind, val, "", "", 1)
		return
	}
	if sum < s.next {
		return
	}
	if u := s.wd.union(sk, sh.scratch); u >= thr {
		s.wd.fired = bucket
		sh.fire(RuleIPRotation, b.cfg.IPRotation.Severity, kind, val, "",
			"many networks ("+strconv.FormatUint(u, 10)+") behind one "+kind, int64(u))
	} else {
		s.next = sum + 1
	}
}

const hourNS = int64(time.Hour)

// weekHour returns the hour of the week (0 = Sunday 00:00 UTC) of unix hour h.
func weekHour(h int64) int {
	day := (h/24 + 4) % 7 // 1970-01-01 was a Thursday
	return int(day*24 + h%24)
}

func (b *builtins) volumeOf(sh *shard, k uint64, ev *event.Access, t int64) {
	c := &b.cfg.RouteVolume
	s := sh.volume.get(k)
	h := t / hourNS
	if s.hour == 0 {
		s.hour = h
	}
	if h > s.hour {
		b.learn(s, s.hour, float32(s.count), !s.fired)
		for x := s.hour + 1; x < h && x < s.hour+hoursPerWeek; x++ {
			b.learn(s, x, 0, true) // hours without traffic
		}
		s.hour, s.count, s.fired = h, 0, false
	} else if h < s.hour {
		return // late event from an hour already closed
	}
	s.count++
	if s.count < c.MinCount {
		return
	}
	slot := weekHour(h)
	var base float64
	switch {
	case s.seen[slot] > 0:
		base = float64(s.base[slot])
	case s.learned >= 24 && s.slots > 0:
		base = s.sum / float64(s.slots)
	default:
		return // nothing learned yet
	}
	if base < 1 {
		base = 1
	}
	if float64(s.count) > c.Factor*base {
		summary := ""
		if !s.fired {
			s.fired = true
			summary = "route volume " + strconv.FormatUint(uint64(s.count), 10) + " this hour, baseline " + strconv.FormatFloat(base, 'f', 0, 64)
		}
		sh.fire(RuleRouteVolume, c.Severity, "route", ev.Route, "", summary, 1)
	}
}

func (b *builtins) learn(s *volState, hour int64, n float32, ok bool) {
	s.learned++
	if !ok {
		return // an hour that alerted teaches nothing
	}
	slot := weekHour(hour)
	old := s.base[slot]
	if s.seen[slot] == 0 {
		s.base[slot] = n
		s.slots++
	} else {
		a := float32(b.cfg.RouteVolume.Alpha)
		s.base[slot] = a*n + (1-a)*old
	}
	if s.seen[slot] < ^uint16(0) {
		s.seen[slot]++
	}
	s.sum += float64(s.base[slot]) - float64(old)
}

func (b *builtins) login(sid string, at time.Time) {
	t := at.UnixNano()
	if b.firstLogin == 0 || t < b.firstLogin {
		b.firstLogin = t
	}
	k := b.hs(sid)
	*b.shards[ownerOf(k)].sessions.get(k) = t
}

func (b *builtins) checkLogin(sh *shard, ev *event.Access, p *prep) {
	t := p.t
	sid, k := ev.Token.JTI, p.jtiHash
	if b.sessionOf != nil {
		sid = b.sessionOf(ev)
		k = b.hs(sid)
	}
	if sid == "" {
		return
	}
	grace := int64(b.cfg.TokenWithoutLogin.Grace)
	issued := t
	if ev.Token.IAT != 0 {
		issued = ev.Token.IAT * int64(time.Second)
	}
	// Tokens issued before the login feed started, or so recently that
	// their login may still be on its way, are not judged.
	if issued < b.firstLogin || t < b.firstLogin+grace || t < issued+grace {
		return
	}
	if ownerOf(k) != sh.id {
		return
	}
	if _, ok := sh.sessions.peek(k); ok {
		return
	}
	kind, v := "kid", ev.Token.KID
	if v == "" {
		kind, v = "session", sid
	}
	sh.fire(RuleTokenWithoutLogin, b.cfg.TokenWithoutLogin.Severity, kind, v, "", "token whose session never logged in", 1)
}
