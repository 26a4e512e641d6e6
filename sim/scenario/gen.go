package scenario

import (
	"math"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/custos-dev/custos/shop"
)

// Stream tags keep the sub-streams' randomness independent.
const (
	tagTests uint64 = iota + 1
	tagProfile
	tagAddresses
	tagEdit
	tagOrders
	tagNormal
	tagForge
	tagHome
	tagVariant
)

// Pages, in the order of shop.Routes.
const (
	pageProfile = iota
	pageAddresses
	pageEdit
	pageOrders
	numPages
)

var pageRoute = [numPages]string{shop.RouteProfile, shop.RouteAddresses, shop.RouteAddressEdit, shop.RouteOrders}

// Share of each page among a customer's page views: order history most, the
// address list at checkout, my-information now and then, editing rarely.
var normalShare = [numPages]float64{0.15, 0.30, 0.10, 0.45}

// Relative sessions per hour of the day (KST): quiet at night, a lunch bump
// and an evening peak.
var hourWeight = [24]float64{3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 8, 7, 7, 7, 7, 7, 8, 9, 10, 10, 8, 5}

const (
	kstOffset    = int64(9 * time.Hour)
	continuePage = 0.75 // a session goes on to another page with this probability (mean 4 pages)
	meanPages    = 1 / (1 - continuePage)
	meanThink    = 30 * float64(time.Second)
	membersPath  = "/api/members/"
)

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rng is splitmix64: fast, and enough for traffic shapes.
type rng struct{ s uint64 }

func newRNG(seed, tag uint64) rng { return rng{s: mix(seed ^ mix(tag*0x9e3779b97f4a7c15))} }

func (r *rng) u64() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix(r.s)
}

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.u64()>>11) / (1 << 53) }

func (r *rng) n(n uint64) uint64 { return r.u64() % n }

// exp returns an exponential variate of mean 1.
func (r *rng) exp() float64 { return -math.Log(1 - r.float()) }

// attacker is the crawler's rotating infrastructure.
type attacker struct {
	seed    uint64
	nets    int
	rotate  uint64
	variant Variant
	sources int // distributed and low-and-slow: how many sources
	// home: the fast variants send from AttackNetworks domestic sources
	home bool
}

func newAttacker(cfg Config) attacker {
	a := attacker{seed: cfg.Seed, nets: cfg.AttackNetworks, rotate: cfg.RotateEvery, variant: cfg.AttackerVariant()}
	switch a.variant {
	case Distributed:
		a.sources, a.rotate = cfg.DistributedSources, cfg.MembersPerSource
	case LowAndSlow:
		a.sources, a.rotate = cfg.SlowSources, 1
	case StolenClientSecret, ReplayedTokens:
		a.home, a.sources = cfg.AttackDomestic, cfg.AttackNetworks
	}
	return a
}

// origin is where one block of a crawler's requests comes from.
type origin struct {
	ip      netip.Addr
	addr    string // ip as text
	country string
	asn     uint32
	ua      string
}

// origin returns the address and user agent of a stream's k-th block of
// requests: the crawler keeps one address for rotate requests, then moves on.
func (a attacker) origin(tag, block uint64, uas []string) origin {
	if a.home {
		return a.domestic(tag, block%uint64(a.sources))
	}
	switch a.variant {
	case Distributed:
		return a.domestic(tag, block%uint64(a.sources))
	case LowAndSlow:
		// A few fixed sources taking turns: request k comes from source k mod n.
		return a.domestic(tag, block%uint64(a.sources))
	}
	h := mix(a.seed ^ mix(tag<<56^block))
	base, b := attacker24(int(h % uint64(a.nets)))
	ip := base.As4()
	ip[3] = byte(1 + (h>>32)%254)
	a4 := netip.AddrFrom4(ip)
	return origin{ip: a4, addr: a4.String(), country: b.country, asn: b.asn, ua: uas[(h>>48)%uint64(len(uas))]}
}

// domestic returns the j-th source of a crawl spread over the shop's own
// country: a residential proxy or a hired phone, each with its own /24, its
// own autonomous system (KR has over 1,000; the synthetic numbers stand for
// them) and a customer's user agent.
func (a attacker) domestic(tag, j uint64) origin {
	h := mix(a.seed ^ mix(tagVariant<<56^tag<<48^j))
	b := domesticNets[h%uint64(len(domesticNets))]
	ip := netip.AddrFrom4([4]byte{b.a, b.b + byte((h>>48)%8), byte(j) ^ byte(h>>8), byte(1 + (h>>16)%254)})
	uas := mobileUAs
	if (h>>24)%10 >= 7 {
		uas = desktopUAs
	}
	return origin{ip: ip, addr: ip.String(), country: "KR", asn: 38000 + uint32((h>>32)%2000), ua: uas[(h>>40)%uint64(len(uas))]}
}

// arena hands out immutable strings carved from large blocks, so a request's
// strings cost no allocation of their own. A block is never written again once
// a string points into it; a kept string keeps its block (64 KiB) alive.
type arena struct{ buf []byte }

const arenaBlock = 64 << 10

// str copies b into the arena and returns it as a string.
func (a *arena) str(b []byte) string {
	if len(b) == 0 || len(b) > arenaBlock/4 {
		return string(b)
	}
	if cap(a.buf)-len(a.buf) < len(b) {
		a.buf = make([]byte, 0, arenaBlock)
	}
	n := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[n], len(b))
}

// forgedPath builds the path and the forged token's ID in one string: the
// crawler mints one token per member ID and reuses it on every page.
func forgedPath(r *Request, a *arena, seed uint64, page, addr int) {
	tokenPath(r, a, seed, page, addr, 'f')
}

// tokenPath is forgedPath with the token ID's first letter: f forged, i
// issued with the stolen client secret, t a customer's token.
func tokenPath(r *Request, a *arena, seed uint64, page, addr int, prefix byte) {
	var buf [96]byte
	b := append(buf[:0], membersPath...)
	b = strconv.AppendUint(b, r.MemberID, 10)
	me := len(b)
	switch page {
	case pageProfile:
		b = append(b, "/profile"...)
	case pageAddresses:
		b = append(b, "/addresses"...)
	case pageEdit:
		b = append(b, "/addresses/"...)
		b = strconv.AppendInt(b, int64(addr), 10)
		b = append(b, "/edit"...)
	case pageOrders:
		b = append(b, "/orders"...)
	}
	pe := len(b)
	b = append(b, prefix)
	b = appendHex(b, mix(seed^mix(tagForge<<56^r.MemberID)))
	s := a.str(b)
	r.Path, r.Member, r.TokenID = s[:pe], s[len(membersPath):me], s[pe:]
}

func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		b = append(b, digits[v>>uint(i)&0xf])
	}
	return b
}

func setTarget(r *Request, pop shop.Population, id uint64) {
	r.MemberID = id
	k := pop.Kind(id)
	r.Exists, r.Decoy = k != shop.Missing, k == shop.Decoy
	r.Status = 404
	if r.Exists {
		r.Status = 200
	}
}

type walk uint8

const (
	walkAll        walk = iota // every ID in order, missing ones included
	walkExisting               // IDs that answered, in order
	randomExisting             // random IDs that answered
)

// crawler spreads total forged requests on one page evenly over [start, end).
type crawler struct {
	pop    shop.Population
	atk    attacker
	seed   uint64
	tag    uint64
	page   int
	mode   walk
	start  int64
	iv     float64
	total  uint64
	k      uint64
	cursor uint64
	t      int64
	rng    rng
	kind   Kind
	tok    TokenKind
	prefix byte
	uas    []string
	block  uint64 // k / rotate of org, or MaxUint64
	org    origin
	walker *shop.Walker
	arena  arena
}

func newCrawler(cfg Config, pop shop.Population, a attacker, tag uint64, page int, mode walk, start, end time.Time, total uint64) *crawler {
	c := &crawler{
		pop: pop, atk: a, seed: cfg.Seed, tag: tag, page: page, mode: mode,
		start: start.UnixNano(), total: total, rng: newRNG(cfg.Seed, tag), kind: AttackCrawl, tok: Forged, prefix: 'f', uas: crawlerUAs,
		block: math.MaxUint64, walker: pop.Walk(),
	}
	if total > 0 {
		c.iv = float64(end.UnixNano()-c.start) / float64(total)
	}
	c.schedule()
	return c
}

func (c *crawler) schedule() {
	if c.k >= c.total {
		c.t = math.MaxInt64
		return
	}
	// k+u with u in [0,1) keeps the sequence ordered.
	c.t = c.start + int64((float64(c.k)+c.rng.float())*c.iv)
}

func (c *crawler) next() int64 { return c.t }

func (c *crawler) target() uint64 {
	n := c.pop.IDSpace()
	switch c.mode {
	case walkAll:
		c.cursor, _ = c.walker.Next()
	case walkExisting:
		for {
			id, k := c.walker.Next()
			if k != shop.Missing {
				c.cursor = id
				break
			}
		}
	default:
		for {
			c.cursor = 1 + c.rng.n(n)
			if c.pop.Exists(c.cursor) {
				break
			}
		}
	}
	return c.cursor
}

func (c *crawler) fill(r *Request) {
	r.Time = time.Unix(0, c.t).UTC()
	r.Kind, r.Token, r.Method = c.kind, c.tok, "GET"
	r.Route = pageRoute[c.page]
	setTarget(r, c.pop, c.target())
	r.Address = -1
	if c.page == pageEdit {
		r.Address = int(c.rng.n(uint64(max(1, c.pop.BookSize(r.MemberID)))))
	}
	tokenPath(r, &c.arena, c.seed, c.page, r.Address, c.prefix)
	if b := c.k / c.atk.rotate; b != c.block {
		c.block, c.org = b, c.atk.origin(c.tag, b, c.uas)
	}
	r.SrcIP, r.Addr, r.Country, r.ASN, r.UserAgent = c.org.ip, c.org.addr, c.org.country, c.org.asn, c.org.ua
	// A replayed token is a customer's: a login preceded it (the customer's).
	r.SessionID, r.Login = "", c.tok == Replayed
	c.k++
	c.schedule()
}

// tests is the attacker trying the stolen key before the crawl: a few
// requests on every page for random accounts.
type tests struct{ crawler }

func newTests(cfg Config, pop shop.Population, a attacker) *tests {
	end := cfg.CrawlStart
	if !end.After(cfg.TestsStart) {
		end = cfg.TestsStart.Add(time.Hour)
	}
	t := &tests{*newCrawler(cfg, pop, a, tagTests, pageProfile, randomExisting, cfg.TestsStart, end, cfg.Tests)}
	t.kind, t.uas = AttackTest, testUAs
	return t
}

var testShare = [numPages]float64{0.5, 0.3, 0.1, 0.1}

func (t *tests) fill(r *Request) {
	u := t.rng.float()
	t.page = numPages - 1
	for p, s := range testShare {
		if u < s {
			t.page = p
			break
		}
		u -= s
	}
	t.crawler.fill(r)
}

// session is one customer's visit: a login, then a few pages.
type session struct {
	t       int64
	member  uint64
	mstr    string
	sid     string
	tid     string
	ua      string
	ip      netip.Addr
	addr    string // ip as text
	country string
	asn     uint32
	book    int
	exists  bool
	login   bool
}

// normal is the customers' traffic: sessions arrive with the daily curve,
// each a login and then page views on the four routes.
type normal struct {
	pop     shop.Population
	seed    uint64
	rng     rng
	arrival int64
	end     int64
	rate    [24]float64 // sessions per nanosecond in each KST hour
	heap    []*session
	free    []*session
	seq     uint64
	edit404 float64
	arena   arena
}

func newNormal(cfg Config, pop shop.Population, perDay uint64) *normal {
	g := &normal{pop: pop, seed: cfg.Seed, rng: newRNG(cfg.Seed, tagNormal), end: cfg.NormalEnd.UnixNano()}
	g.edit404 = cfg.NormalNotFound / normalShare[pageEdit]
	if perDay == 0 {
		g.arrival = math.MaxInt64
		return g
	}
	var sum float64
	for _, w := range hourWeight {
		sum += w
	}
	sessions := float64(perDay) / meanPages
	for h, w := range hourWeight {
		g.rate[h] = sessions * w / sum / float64(time.Hour)
	}
	g.arrival = g.advance(cfg.NormalStart.UnixNano())
	return g
}

// advance draws the next session arrival after t under the hourly rates.
func (g *normal) advance(t int64) int64 {
	e := g.rng.exp()
	for {
		local := t + kstOffset
		h := (local / int64(time.Hour)) % 24
		hourEnd := t - local%int64(time.Hour) + int64(time.Hour)
		rate := g.rate[h]
		if dt := float64(hourEnd - t); e <= rate*dt {
			t += int64(e / rate)
			break
		} else {
			e -= rate * dt
			t = hourEnd
		}
	}
	if t >= g.end {
		return math.MaxInt64
	}
	return t
}

func (g *normal) next() int64 {
	if len(g.heap) > 0 && g.heap[0].t < g.arrival {
		return g.heap[0].t
	}
	return g.arrival
}

func (g *normal) start() *session {
	var s *session
	if n := len(g.free); n > 0 {
		s, g.free = g.free[n-1], g.free[:n-1]
	} else {
		s = new(session)
	}
	g.seq++
	id := g.pop.MemberID(1 + g.rng.n(g.pop.Members))
	h := mix(g.seed ^ mix(tagHome<<56^id))
	*s = session{t: g.arrival, member: id, mstr: strconv.FormatUint(id, 10), login: true, exists: true}
	sh := mix(g.seed ^ mix(tagNormal<<56^g.seq))
	s.sid = "s" + string(appendHex(nil, sh))
	s.tid = "t" + string(appendHex(nil, mix(sh)))
	var b block
	var ip [4]byte
	if h%100 < 70 { // mobile: the app or a phone browser, on a carrier network
		s.ua = mobileUAs[(h>>8)%uint64(len(mobileUAs))]
		v := g.rng.u64()
		b = domesticMobile[v%uint64(len(domesticMobile))]
		ip = [4]byte{b.a, b.b, byte(v >> 16), byte(1 + (v>>24)%254)}
	} else { // desktop at home: the same address every time
		s.ua = desktopUAs[(h>>8)%uint64(len(desktopUAs))]
		b = domesticFixed[(h>>16)%uint64(len(domesticFixed))]
		ip = [4]byte{b.a, b.b, byte(h >> 24), byte(1 + (h>>32)%254)}
	}
	s.ip, s.country, s.asn = netip.AddrFrom4(ip), b.country, b.asn
	s.addr = s.ip.String()
	s.book = g.pop.BookSize(id)
	g.arrival = g.advance(g.arrival)
	return s
}

func (g *normal) fill(r *Request) {
	var s *session
	if len(g.heap) > 0 && g.heap[0].t < g.arrival {
		s = g.popSession()
	} else {
		s = g.start()
	}
	r.Time = time.Unix(0, s.t).UTC()
	r.SrcIP, r.Addr, r.Country, r.ASN, r.UserAgent = s.ip, s.addr, s.country, s.asn, s.ua
	r.Method, r.Kind, r.Token = "GET", Normal, IssuedByLogin
	r.TokenID, r.SessionID, r.Login = s.tid, s.sid, s.login
	r.Member, r.MemberID, r.Exists, r.Decoy, r.Status = s.mstr, s.member, s.exists, false, 200
	r.Address = -1
	u := g.rng.float()
	page := numPages - 1
	for p, sh := range normalShare {
		if u < sh {
			page = p
			break
		}
		u -= sh
	}
	r.Route = pageRoute[page]
	var buf [96]byte
	b := append(append(buf[:0], membersPath...), s.mstr...)
	switch page {
	case pageProfile:
		b = append(b, "/profile"...)
	case pageAddresses:
		b = append(b, "/addresses"...)
	case pageOrders:
		b = append(b, "/orders"...)
	case pageEdit:
		// A stale link to an entry deleted meanwhile is the customers' 404.
		if g.rng.float() < g.edit404 {
			r.Address, r.Status = s.book, 404
		} else {
			r.Address = int(g.rng.n(uint64(s.book)))
		}
		b = append(b, "/addresses/"...)
		b = strconv.AppendInt(b, int64(r.Address), 10)
		b = append(b, "/edit"...)
	}
	r.Path = g.arena.str(b)
	s.login = false
	if g.rng.float() < continuePage {
		s.t += int64(g.rng.exp()*meanThink) + 1
		g.push(s)
	} else {
		g.free = append(g.free, s)
	}
}

func (g *normal) push(s *session) {
	g.heap = append(g.heap, s)
	for j := len(g.heap) - 1; j > 0; {
		p := (j - 1) / 2
		if g.heap[p].t <= g.heap[j].t {
			break
		}
		g.heap[j], g.heap[p] = g.heap[p], g.heap[j]
		j = p
	}
}

func (g *normal) popSession() *session {
	s := g.heap[0]
	n := len(g.heap) - 1
	g.heap[0] = g.heap[n]
	g.heap = g.heap[:n]
	for j := 0; ; {
		l := 2*j + 1
		if l >= n {
			break
		}
		m := l
		if l+1 < n && g.heap[l+1].t < g.heap[l].t {
			m = l + 1
		}
		if g.heap[j].t <= g.heap[m].t {
			break
		}
		g.heap[j], g.heap[m] = g.heap[m], g.heap[j]
		j = m
	}
	return s
}
