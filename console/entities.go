package console

import (
	"cmp"
	"context"
	"net/netip"
	"strconv"
	"strings"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
)

// Entity kinds as the console shows them.
const (
	kindPerson  = "person"
	kindClient  = "client"
	kindMember  = "member"
	kindNetwork = "network"
	kindKey     = "key"
	kindSession = "session"
	kindCountry = "country"
	kindRoute   = "route"
	kindAgent   = "user agent"
	kindBlock   = "id block"
	kindOther   = "entity"
)

// entity is what an alert is about, as an analyst reads it: the kind of
// thing, its name and a detail line, with the value detection used (Raw)
// kept for the tooltip and for search.
type entity struct {
	Kind   string
	Name   string
	Detail string
	Flag   string // a marker shown as a badge: "decoy", "departed", "revoked"
	Raw    string
}

// namer resolves entities for one page: the directory, clients and keys are
// read once, on first need, and every name is cached.
type namer struct {
	c   *Console
	ctx context.Context

	people  map[string]staff.Person
	clients map[string]authority.Client
	keys    map[string]keys.Key
	custody map[string]string // kid → its current custodians, named
	cache   map[string]entity
}

func (c *Console) namer(ctx context.Context) *namer {
	return &namer{c: c, ctx: ctx, cache: map[string]entity{}, custody: map[string]string{}}
}

// name resolves raw, an alert's entity ("kind:value", "kind:value@value2",
// or a bare staff id or kid from the directory's own findings).
func (n *namer) name(raw string) entity {
	if e, ok := n.cache[raw]; ok {
		return e
	}
	e := n.resolve(raw)
	e.Raw, e.Name = raw, cmp.Or(e.Name, raw)
	n.cache[raw] = e
	return e
}

// names resolves each of raws.
func (n *namer) names(raws []string) []entity {
	out := make([]entity, len(raws))
	for i, r := range raws {
		out[i] = n.name(r)
	}
	return out
}

func (n *namer) resolve(raw string) entity {
	kind, val, ok := strings.Cut(raw, ":")
	if !ok {
		kind, val = "", raw
	}
	switch kind {
	case "ip":
		if a, err := netip.ParseAddr(val); err == nil {
			return n.network(val, a)
		}
	case "net":
		if p, err := netip.ParsePrefix(val); err == nil {
			return n.network(val, p.Addr())
		}
	case "asn":
		return entity{Kind: kindNetwork, Name: "AS" + val}
	case "kid":
		return n.key(val)
	case "client":
		return n.client(val)
	case "subject":
		sub, where, _ := strings.Cut(val, "@")
		e := n.member(sub)
		if where != "" {
			e.Detail = strings.TrimSpace(e.Detail + " from " + where)
		}
		return e
	case "session":
		return entity{Kind: kindSession, Name: short(val), Detail: "token or login session id"}
	case "country":
		c, route, _ := strings.Cut(val, "@")
		e := entity{Kind: kindCountry, Name: c}
		if route != "" {
			e.Detail = "on " + route
		}
		return e
	case "route":
		return entity{Kind: kindRoute, Name: val}
	case "ua":
		return entity{Kind: kindAgent, Name: val}
	case "id_block":
		return entity{Kind: kindBlock, Name: "member IDs from " + val}
	case "credential", "staff", "":
		// A credential is a key id or a token subject; the directory's
		// findings name a staff id or a kid alone.
		if e, ok := n.known(val); ok {
			return e
		}
		if kind == "" {
			return entity{Kind: kindOther, Name: short(val)}
		}
		return entity{Kind: "credential", Name: short(val)}
	}
	return entity{Kind: kindOther, Name: raw}
}

// known resolves a bare identifier as a person, a client or a key.
func (n *namer) known(id string) (entity, bool) {
	n.load()
	if _, ok := n.people[id]; ok {
		return n.person(id), true
	}
	if _, ok := n.clients[id]; ok {
		return n.client(id), true
	}
	if _, ok := n.keys[id]; ok {
		return n.key(id), true
	}
	return entity{}, false
}

func (n *namer) load() {
	if n.people != nil {
		return
	}
	n.people, n.clients, n.keys = map[string]staff.Person{}, map[string]authority.Client{}, map[string]keys.Key{}
	if ps, err := n.c.cfg.Staff.People(n.ctx); err == nil {
		for _, p := range ps {
			n.people[p.ID] = p
		}
	} else {
		n.c.log.Warn("console: staff directory unavailable for names", "err", err)
	}
	for _, cl := range n.c.cfg.Credentials.Clients() {
		n.clients[cl.ID] = cl
	}
	if ks, err := n.c.cfg.Keys.List(n.ctx); err == nil {
		for _, k := range ks {
			n.keys[k.KID] = k
		}
	} else {
		n.c.log.Warn("console: keys unavailable for names", "err", err)
	}
}

func (n *namer) person(id string) entity {
	n.load()
	p, ok := n.people[id]
	if !ok {
		return entity{Kind: kindPerson, Name: short(id), Detail: "not in the staff directory"}
	}
	e := entity{Kind: kindPerson, Name: p.UserName, Detail: string(p.Kind)}
	if p.DisplayName != "" {
		e.Name, e.Detail = p.DisplayName, p.UserName+" · "+string(p.Kind)
	}
	if p.Status != staff.Active {
		e.Flag = string(p.Status)
	}
	return e
}

func (n *namer) client(id string) entity {
	n.load()
	cl, ok := n.clients[id]
	if !ok {
		return entity{Kind: kindClient, Name: short(id), Detail: "unknown client"}
	}
	e := entity{Kind: kindClient, Name: cl.Name, Detail: "client " + short(cl.ID)}
	if p, ok := n.people[cl.HeldBy]; ok {
		e.Detail += " · secret held by " + p.UserName
	}
	if cl.RevokedAt != nil {
		e.Flag = "revoked"
	}
	return e
}

func (n *namer) member(sub string) entity {
	n.load()
	if _, ok := n.people[sub]; ok {
		return n.person(sub)
	}
	e := entity{Kind: kindMember, Name: "member " + sub}
	if n.c.cfg.IsDecoy != nil && n.c.cfg.IsDecoy(sub) {
		e.Flag, e.Detail = "decoy", "no real customer has this id"
	}
	return e
}

func (n *namer) key(kid string) entity {
	n.load()
	e := entity{Kind: kindKey, Name: kid}
	k, ok := n.keys[kid]
	if !ok {
		e.Detail = "not a key of this authority"
		return e
	}
	if k.State != keys.Active {
		e.Flag = string(k.State)
	}
	who, ok := n.custody[kid]
	if !ok {
		cs, err := n.c.cfg.Staff.Custodians(n.ctx, staff.SigningKey, kid)
		if err != nil {
			n.c.log.Warn("console: custodians unavailable for names", "kid", kid, "err", err)
		}
		var names []string
		for _, cu := range cs {
			if cu.Until != nil {
				continue
			}
			s := cu.UserName
			if p, ok := n.people[cu.StaffID]; ok && p.DisplayName != "" {
				s = p.DisplayName
			}
			if cu.Status != staff.Active {
				s += " (" + string(cu.Status) + ")"
			}
			names = append(names, s)
		}
		who = strings.Join(names, ", ")
		if who == "" {
			who = "none"
		}
		n.custody[kid] = who
	}
	e.Detail = "custodians: " + who
	return e
}

func (n *namer) network(name string, a netip.Addr) entity {
	e := entity{Kind: kindNetwork, Name: name}
	if n.c.cfg.Locate == nil {
		return e
	}
	e.Detail = place(n.c.cfg.Locate(a))
	return e
}

// place writes a location as "KR · AS4766 Korea Telecom".
func place(l gateway.Location) string {
	var parts []string
	if l.Country != "" {
		parts = append(parts, l.Country)
	}
	if l.ASN != 0 {
		as := "AS" + strconv.FormatUint(uint64(l.ASN), 10)
		if l.Org != "" {
			as += " " + l.Org
		}
		parts = append(parts, as)
	}
	if len(parts) == 0 {
		return "location unknown"
	}
	return strings.Join(parts, " · ")
}

// short abbreviates long opaque identifiers; the whole stays in the tooltip.
func short(s string) string {
	if r := []rune(s); len(r) > 16 {
		return string(r[:12]) + "…"
	}
	return s
}
