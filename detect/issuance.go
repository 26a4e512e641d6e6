package detect

import (
	"hash/maphash"
	"net/netip"
	"strconv"
	"time"

	"github.com/custos-dev/custos/event"
)

// Issuance is one token the authority issued, as issuance-side detection
// sees it. A stolen client secret gets real, ledgered tokens that pass every
// check of the gateway; only the issuance side can tell them apart: who
// asked (the client, from which network) and for whom (with which login).
type Issuance struct {
	Time      time.Time
	RequestID string // of the request the token was issued for, if known (kept as a sample)
	Client    string // the client that authenticated
	Subject   string
	Session   string // the login session the client named; empty: none
	Caller    string // address that called the token endpoint
	ClientIP  string // the end user's address, as the client reported it
	JTI       string
	KID       string
}

// issuanceState is what the issuance detectors keep per client.
type issuanceState struct {
	bucket   int64 // window of noLogin
	noLogin  uint32
	nlFired  bool
	walk     walker
	nets     [maxClientNets]uint64 // caller networks seen (keys), 0: free
	nnets    uint8
	total    uint32 // issuances seen, saturating
	rateB    int64  // rate bucket
	rateN    uint32 // issuances in rateB
	rateBase float64
	rateSeen uint32 // buckets learnt
	rateHot  bool   // rateB has alerted
}

// maxClientNets is how many caller networks a client's history holds; a
// client calling from more has no usual network and is not judged on it.
const maxClientNets = 16

// issuance holds the issuance detectors' state: per client, and per login
// session (the subject it was first used for), both bounded.
type issuance struct {
	seed     maphash.Seed
	clients  *genMap[issuanceState]
	sessions *genMap[uint64]
}

func newIssuance(cfg *Config, seed maphash.Seed) *issuance {
	return &issuance{seed: seed, clients: newGenMap[issuanceState](cfg.MaxKeys), sessions: newGenMap[uint64](cfg.MaxKeys * 16)}
}

// Issued runs the issuance detectors over one issued token: keyed by the
// client, which an attacker holding one stolen secret cannot multiply.
//
//   - issuance_without_login: tokens issued with no login session, or with
//     a session already used for another subject, IssuanceConfig.NoLoginMin
//     times within the window;
//   - issuance_sequential: subjects in near-sequential order (the walk of
//     enumeration_sequential, per client);
//   - issuance_network: a caller network outside the client's history, once
//     it has IssuanceConfig.HistoryMin issuances;
//   - issuance_rate: more than Factor times the client's usual issuances
//     per RateBucket, and at least RateMin.
//
// Service tokens (subject equal to the client) are not judged.
func (e *Engine) Issued(is Issuance) {
	c := &e.cfg.Issuance
	if c.Disabled || is.Client == "" || is.Subject == "" || is.Subject == is.Client {
		return
	}
	if is.Time.IsZero() {
		is.Time = e.now()
	}
	e.mu.Lock()
	e.issued(&is)
	out := append([]pendingAlert(nil), e.pending...)
	e.pending = e.pending[:0]
	e.mu.Unlock()
	e.deliver(out)
}

func (e *Engine) issued(is *Issuance) {
	c := &e.cfg.Issuance
	d := e.iss
	t := is.Time.UnixNano()
	s := d.clients.get(maphash.String(d.seed, is.Client))
	if s.total < ^uint32(0) {
		s.total++
	}
	ev := event.Access{Time: is.Time, RequestID: is.RequestID}
	attrs := func() map[string]string {
		m := map[string]string{"client": is.Client, "subject": is.Subject}
		for k, v := range map[string]string{"jti": is.JTI, "kid": is.KID, "src_ip": is.Caller, "client_ip": is.ClientIP, "session": is.Session} {
			if v != "" {
				m[k] = v
			}
		}
		return m
	}
	fire := func(rule, summary string, sev Severity) {
		e.fireAttrs(alertKey(e.seed, rule, "client", is.Client, ""), rule, sev, "client", is.Client, "", &ev, &fireRec{summary: summary}, 1, attrs())
	}

	// No login session behind the token.
	sub := maphash.String(d.seed, is.Subject)
	noLogin := is.Session == ""
	if !noLogin {
		v := d.sessions.get(maphash.String(d.seed, is.Session))
		switch *v {
		case 0:
			*v = sub | 1
		case sub | 1:
		default:
			noLogin = true // one login, many people
		}
	}
	if b := t / int64(c.Window); b != s.bucket {
		s.bucket, s.noLogin, s.nlFired = b, 0, false
	}
	if noLogin {
		s.noLogin++
		if s.noLogin >= c.NoLoginMin {
			summary := ""
			if !s.nlFired {
				s.nlFired = true
				summary = strconv.FormatUint(uint64(s.noLogin), 10) + " tokens issued to one client within " + c.Window.String() + " with no login session behind them"
			}
			fire(RuleIssuanceNoLogin, summary, c.Severity)
		}
	}

	// Subjects in sequence.
	if n, err := strconv.ParseInt(is.Subject, 10, 64); err == nil && n >= 0 && !e.cfg.Enumeration.NoWalk {
		en := &e.cfg.Enumeration
		if run, i := s.walk.step(n, t, en.WalkGap, uint32(c.Window/time.Second)); run >= en.WalkRun {
			summary := ""
			if s.walk.alerts(i) {
				summary = "tokens issued to one client for " + strconv.FormatUint(uint64(run), 10) + " near-sequential member ids"
			}
			fire(RuleIssuanceSequence, summary, c.Severity)
		}
	}

	// An unusual caller network.
	if ip, err := netip.ParseAddr(is.Caller); err == nil {
		p := netOf(ip)
		a := p.Addr().As16()
		k := mix(uint64(a[0])<<56|uint64(a[1])<<48|uint64(a[2])<<40|uint64(a[3])<<32|uint64(a[12])<<24|uint64(a[13])<<16|uint64(a[14])<<8) | 1
		known := false
		for _, n := range s.nets[:s.nnets] {
			if n == k {
				known = true
				break
			}
		}
		if !known {
			if s.total > c.HistoryMin && s.nnets < maxClientNets {
				fire(RuleIssuanceNetwork, "token endpoint called by client from "+p.String()+", outside its history", c.NetworkSeverity)
			}
			if s.nnets < maxClientNets {
				s.nets[s.nnets] = k
				s.nnets++
			}
		}
	}

	// Rate per client against its own usual rate.
	if b := t / int64(c.RateBucket); b != s.rateB {
		if s.rateB != 0 && !s.rateHot {
			n := float64(s.rateN)
			a := issRateAlpha
			if s.rateSeen < 1/issRateAlpha {
				s.rateSeen++
				a = 1 / float64(s.rateSeen)
			}
			s.rateBase += a * (n - s.rateBase)
		}
		s.rateB, s.rateN, s.rateHot = b, 0, false
	}
	s.rateN++
	if s.rateN >= c.RateMin && s.rateSeen >= issRateLearn && float64(s.rateN) > c.RateFactor*s.rateBase {
		summary := ""
		if !s.rateHot {
			s.rateHot = true
			summary = strconv.FormatUint(uint64(s.rateN), 10) + " tokens issued to one client within " + c.RateBucket.String() + ", usually " + strconv.FormatFloat(s.rateBase, 'f', 0, 64)
		}
		fire(RuleIssuanceRate, summary, c.Severity)
	}
}

// issuance_rate learns a client's usual issuances per bucket as an EWMA
// (the plain mean of the first 1/issRateAlpha buckets) and judges only once
// issRateLearn buckets are learnt; buckets that alerted teach nothing.
const (
	issRateAlpha = 0.02
	issRateLearn = 12
)
