package detect

import (
	"hash/maphash"
	"net/netip"
	"strconv"
	"time"

	"github.com/axiomhq/hyperloglog"

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
	used  uint32 // enumState.clock when last extended
	fired bool
}

type enumState struct {
	wd    windowDistinct
	next  uint64 // sum at which to compute the union again
	lanes [walkLanes]lane
	clock uint32
}

type unknownState struct {
	nf, all windowCount
}

type histState struct {
	countries [4][2]byte
	n         uint8
	total     uint32
}

type rotState struct {
	wd   windowDistinct
	next uint64
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

// builtins holds the state of the ten built-in detectors.
type builtins struct {
	cfg  *Config
	seed maphash.Seed

	decoys     map[string]bool
	keyStates  map[string]keyState
	departed   map[uint64]departedCred
	enum       [numDims]*genMap[enumState]
	enumHalf   int64
	enumThr    [numDims]uint64
	scratch    *hyperloglog.Sketch
	unknown    [numDims]*genMap[unknownState]
	unkRoutes  map[string]bool
	allowed    map[string]bool
	routeAllow map[string]map[string]bool
	hist       *genMap[histState]
	rot        [3]*genMap[rotState]
	rotHalf    int64
	volume     *genMap[volState]
	sessions   *genMap[int64]
	firstLogin int64
	sessionOf  func(*event.Access) string
}

func newBuiltins(cfg *Config, seed maphash.Seed) *builtins {
	b := &builtins{
		cfg: cfg, seed: seed,
		decoys:     make(map[string]bool),
		keyStates:  make(map[string]keyState),
		departed:   make(map[uint64]departedCred),
		enumHalf:   int64(cfg.Enumeration.Window / 2),
		rotHalf:    int64(cfg.IPRotation.Window / 2),
		unkRoutes:  make(map[string]bool),
		allowed:    make(map[string]bool),
		routeAllow: make(map[string]map[string]bool),
		hist:       newGenMap[histState](cfg.MaxKeys),
		volume:     newGenMap[volState](cfg.RouteVolume.MaxRoutes),
		sessions:   newGenMap[int64](cfg.MaxKeys * 64),
	}
	b.scratch, _ = hyperloglog.NewSketch(hllPrecision, false)
	en := &cfg.Enumeration
	b.enumThr = [numDims]uint64{en.Threshold, en.PerNetwork, en.PerASN, en.PerUserAgent, en.PerKeyID}
	for i := range b.enum {
		b.enum[i] = newGenMap[enumState](cfg.MaxKeys)
		b.unknown[i] = newGenMap[unknownState](cfg.MaxKeys)
	}
	for i := range b.rot {
		b.rot[i] = newGenMap[rotState](cfg.MaxKeys)
	}
	for _, s := range cfg.DecoySubject.Subjects {
		b.decoys[s] = true
	}
	for _, r := range cfg.UnknownSubject.Routes {
		b.unkRoutes[r] = true
	}
	for _, c := range cfg.ForeignOrigin.Allowed {
		b.allowed[c] = true
	}
	for r, cs := range cfg.ForeignOrigin.Routes {
		m := make(map[string]bool, len(cs))
		for _, c := range cs {
			m[c] = true
		}
		b.routeAllow[r] = m
	}
	return b
}

func (b *builtins) hs(s string) uint64 { return maphash.String(b.seed, s) }

// mix is splitmix64's finaliser: it spreads integer keys over 64 bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (b *builtins) process(e *Engine, ev *event.Access) {
	c := b.cfg
	t := ev.Time.UnixNano()
	kid := ev.Token.KID
	subject := ev.Subject
	if subject == "" {
		subject = ev.Token.Sub
	}
	ip, ipErr := netip.ParseAddr(ev.SrcIP)
	hasIP := ipErr == nil
	var netKey uint64
	var network netip.Prefix
	if hasIP {
		network = netOf(ip)
		a := network.Addr().As16()
		netKey = mix(uint64(a[0])<<56|uint64(a[1])<<48|uint64(a[2])<<40|uint64(a[3])<<32|uint64(a[4])<<24|uint64(a[5])<<16|uint64(a[12])<<8|uint64(a[13])) ^ mix(uint64(a[14]))
	}

	// 1. not_issued
	if !c.NotIssued.Disabled && ev.Reason == event.ReasonNotIssued {
		k, v := "kid", kid
		if v == "" {
			k, v = "ip", ev.SrcIP
		}
		e.fire(RuleNotIssued, c.NotIssued.Severity, k, v, "", ev, "validly signed token that the authority never issued", 1)
	}
	// 2. decoy_subject
	if !c.DecoySubject.Disabled && (ev.Reason == event.ReasonDecoySubject || (len(b.decoys) > 0 && b.decoys[subject])) {
		k, v := "kid", kid
		if v == "" {
			k, v = "ip", ev.SrcIP
		}
		e.fire(RuleDecoySubject, c.DecoySubject.Severity, k, v, "", ev, "request for a decoy member", 1)
	}
	// 3. revoked_or_retired_key
	if !c.RevokedKey.Disabled && kid != "" {
		bad := ev.Reason == event.ReasonRevokedKey
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
			e.fire(RuleRevokedKey, c.RevokedKey.Severity, "kid", kid, "", ev, "token signed by a key that should no longer sign", 1)
		}
	}
	// 4. departed_credential_use
	if !c.DepartedCred.Disabled && len(b.departed) > 0 {
		for _, cred := range [2]string{kid, ev.Token.Sub} {
			if cred == "" {
				continue
			}
			if d, ok := b.departed[b.hs(cred)]; ok && d.name == cred && t >= d.at {
				e.fire(RuleDepartedCred, c.DepartedCred.Severity, "credential", cred, "", ev, "credential of someone who has left used", 1)
			}
		}
	}

	var subjHash uint64
	var subjNum int64
	subjIsNum := false
	if subject != "" {
		subjHash = b.hs(subject)
		if n, err := strconv.ParseInt(subject, 10, 64); err == nil {
			subjNum, subjIsNum = n, true
		}
	}
	var dimKeys [numDims]uint64
	var dimOK [numDims]bool
	if hasIP {
		dimKeys[dimIP], dimOK[dimIP] = mix(netKey^b.hs(ev.SrcIP)), true
		dimKeys[dimNet], dimOK[dimNet] = netKey, true
	}
	if ev.ASN != 0 {
		dimKeys[dimASN], dimOK[dimASN] = mix(uint64(ev.ASN)), true
	}
	if ev.UserAgent != "" {
		dimKeys[dimUA], dimOK[dimUA] = b.hs(ev.UserAgent), true
	}
	if kid != "" {
		dimKeys[dimKID], dimOK[dimKID] = b.hs(kid), true
	}

	// 5. enumeration
	if !c.Enumeration.Disabled && subject != "" {
		bucket := t / b.enumHalf
		for d := 0; d < numDims; d++ {
			thr := b.enumThr[d]
			if !dimOK[d] || (thr == 0 && (c.Enumeration.NoWalk || d == dimKID)) {
				continue
			}
			s := b.enum[d].get(dimKeys[d])
			var sum uint64
			if thr > 0 {
				sum = s.wd.add(bucket, subjHash)
			}
			if thr > 0 && sum >= thr {
				if s.wd.fired >= bucket-1 && s.wd.fired != 0 {
					e.fire(RuleEnumeration, c.Enumeration.Severity, dimKind[d], dimValue(d, ev, network), "", ev, "one source touching many distinct subjects", 1)
				} else if sum >= s.next {
					if u := s.wd.union(b.scratch); u >= thr {
						s.wd.fired = bucket
						e.fire(RuleEnumeration, c.Enumeration.Severity, dimKind[d], dimValue(d, ev, network), "", ev,
							"one source touched "+strconv.FormatUint(u, 10)+" distinct subjects within "+c.Enumeration.Window.String(), int64(u))
					} else {
						s.next = sum + thr/32 + 1
					}
				}
			}
			if subjIsNum && !c.Enumeration.NoWalk && d != dimKID {
				b.walk(e, s, d, subjNum, ev, network)
			}
		}
	}

	subjectBound := ev.Subject != "" && (len(b.unkRoutes) == 0 || b.unkRoutes[ev.Route])
	// 6. unknown_subject_rate
	if !c.UnknownSubject.Disabled && subjectBound {
		h := int64(c.UnknownSubject.Window)
		var nf uint32
		if ev.Status == 404 {
			nf = 1
		}
		for _, d := range [...]int{dimNet, dimASN, dimKID} {
			if !dimOK[d] {
				continue
			}
			s := b.unknown[d].get(dimKeys[d])
			all := s.all.add(t, h, 1)
			n := s.nf.add(t, h, nf)
			if nf == 1 && n >= c.UnknownSubject.MinCount && float64(n) >= c.UnknownSubject.MinRatio*float64(all) {
				if s.nf.fired == 0 {
					s.nf.fired = 1
					e.fire(RuleUnknownSubject, c.UnknownSubject.Severity, dimKind[d], dimValue(d, ev, network), "", ev,
						"burst of not-found answers on subject-bound routes: "+strconv.FormatUint(uint64(n), 10)+" of "+strconv.FormatUint(uint64(all), 10), int64(n))
				} else {
					e.fire(RuleUnknownSubject, c.UnknownSubject.Severity, dimKind[d], dimValue(d, ev, network), "", ev, "", 1)
				}
			} else if n < c.UnknownSubject.MinCount/2 {
				s.nf.fired = 0
			}
		}
	}

	// 7. foreign_origin (customer-data requests only)
	if !c.ForeignOrigin.Disabled && ev.Country != "" && (ev.Subject != "" || len(ev.DataClasses) > 0) {
		allowed := b.allowed
		if m, ok := b.routeAllow[ev.Route]; ok {
			allowed = m
		}
		if !allowed[ev.Country] {
			e.fire(RuleForeignOrigin, c.ForeignOrigin.Severity, "country", ev.Country, ev.Route, ev, "customer data requested from outside the allowed countries", 1)
		} else if !c.ForeignOrigin.NoHistory && subject != "" && len(ev.Country) == 2 {
			h := b.hist.get(subjHash)
			cc := [2]byte{ev.Country[0], ev.Country[1]}
			known := false
			for i := uint8(0); i < h.n; i++ {
				if h.countries[i] == cc {
					known = true
					break
				}
			}
			if !known {
				if h.total >= c.ForeignOrigin.HistoryMin {
					e.fire(RuleForeignOrigin, c.ForeignOrigin.Severity, "subject", subject, ev.Country, ev, "subject accessed from a country outside its own history", 1)
				}
				if h.n < uint8(len(h.countries)) {
					h.countries[h.n] = cc
					h.n++
				}
			}
			h.total++
		}
	}

	// 8. ip_rotation
	if !c.IPRotation.Disabled && hasIP {
		bucket := t / b.rotHalf
		if ev.Token.JTI != "" {
			b.rotate(e, 0, "jti", ev.Token.JTI, c.IPRotation.PerToken, bucket, netKey, ev)
		}
		if ev.Token.Sub != "" {
			b.rotate(e, 1, "subject", ev.Token.Sub, c.IPRotation.PerSubject, bucket, netKey, ev)
		}
		if c.IPRotation.PerFingerprint > 0 && ev.UserAgent != "" {
			b.rotate(e, 2, "fingerprint", ev.UserAgent, c.IPRotation.PerFingerprint, bucket, netKey, ev)
		}
	}

	// 9. route_volume
	if !c.RouteVolume.Disabled && ev.Route != "" {
		b.volumeOf(e, ev, t)
	}

	// 10. token_without_login
	if !c.TokenWithoutLogin.Disabled && b.firstLogin != 0 {
		b.checkLogin(e, ev, t)
	}
}

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

// walk follows near-sequential member IDs from one source. Each source keeps
// a few lanes so that interleaved ordinary traffic does not break a walk.
func (b *builtins) walk(e *Engine, s *enumState, d int, id int64, ev *event.Access, network netip.Prefix) {
	c := &b.cfg.Enumeration
	s.clock++
	best, victim := -1, 0
	for i := range s.lanes {
		l := &s.lanes[i]
		diff := id - l.last
		if diff < 0 {
			diff = -diff
		}
		if l.run > 0 || l.last != 0 {
			if diff == 0 {
				return
			}
			if diff <= c.WalkGap {
				best = i
				break
			}
		}
		if v := &s.lanes[victim]; l.run < v.run || (l.run == v.run && l.used < v.used) {
			victim = i
		}
	}
	if best < 0 {
		s.lanes[victim] = lane{last: id, used: s.clock}
		return
	}
	l := &s.lanes[best]
	l.last, l.used = id, s.clock
	l.run++
	if l.run >= c.WalkRun {
		summary := ""
		if !l.fired {
			l.fired = true
			summary = "walk through " + strconv.FormatUint(uint64(l.run), 10) + " near-sequential member ids"
		}
		e.fire(RuleSequentialWalk, c.Severity, dimKind[d], dimValue(d, ev, network), "", ev, summary, 1)
	}
}

func (b *builtins) rotate(e *Engine, i int, kind, val string, thr uint64, bucket int64, netKey uint64, ev *event.Access) {
	s := b.rot[i].get(b.hs(val))
	sum := s.wd.add(bucket, netKey)
	if sum < thr {
		return
	}
	if s.wd.fired != 0 && s.wd.fired >= bucket-1 {
		e.fire(RuleIPRotation, b.cfg.IPRotation.Severity, kind, val, "", ev, "", 1)
		return
	}
	if sum < s.next {
		return
	}
	if u := s.wd.union(b.scratch); u >= thr {
		s.wd.fired = bucket
		e.fire(RuleIPRotation, b.cfg.IPRotation.Severity, kind, val, "", ev,
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

func (b *builtins) volumeOf(e *Engine, ev *event.Access, t int64) {
	c := &b.cfg.RouteVolume
	s := b.volume.get(b.hs(ev.Route))
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
		e.fire(RuleRouteVolume, c.Severity, "route", ev.Route, "", ev, summary, 1)
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
	*b.sessions.get(b.hs(sid)) = t
}

func (b *builtins) checkLogin(e *Engine, ev *event.Access, t int64) {
	var sid string
	if b.sessionOf != nil {
		sid = b.sessionOf(ev)
	} else {
		sid = ev.Token.JTI
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
	if _, ok := b.sessions.peek(b.hs(sid)); ok {
		return
	}
	k, v := "kid", ev.Token.KID
	if v == "" {
		k, v = "session", sid
	}
	e.fire(RuleTokenWithoutLogin, b.cfg.TokenWithoutLogin.Severity, k, v, "", ev, "token whose session never logged in", 1)
}
