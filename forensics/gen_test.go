package forensics

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/custos-dev/custos/event"
)

// testRoutes are the shop's routes with the data classes their answers carry.
var testRoutes = []struct {
	route   string
	classes []string
}{
	{"/v1/members/{id}/profile", []string{event.ClassName, event.ClassEmail}},
	{"/v1/members/{id}/addresses", []string{event.ClassName, event.ClassPhone, event.ClassAddress}},
	{"/v1/members/{id}/addresses/{aid}", []string{event.ClassName, event.ClassPhone, event.ClassEntranceCode}},
	{"/v1/members/{id}/orders", []string{event.ClassOrderHistory}},
	{"/v1/catalog", nil},
}

var genStart = time.Date(2025, 6, 24, 10, 0, 0, 0, time.UTC)

// genConfig shapes a generated data set.
type genConfig struct {
	Seed    uint64
	Hours   int
	PerHour int // events per hour
	Members int
	Attack  float64 // share of attack events
}

// genEvent makes the i-th event: normal shop traffic mixed with an attack
// that forges tokens with a stolen key from overseas networks, plus a few
// attack requests with a legitimate key from the attacker's /24.
func genEvent(r *rand.Rand, cfg genConfig, i int) event.Access {
	hour := i / cfg.PerHour
	t := genStart.Add(time.Duration(hour)*time.Hour + time.Duration(r.Int64N(int64(time.Hour))))
	rt := testRoutes[r.IntN(len(testRoutes))]
	sub := strconv.Itoa(1 + r.IntN(cfg.Members))
	ev := event.Access{
		Time: t, Gateway: "gw-1", RequestID: fmt.Sprintf("req-%d", i), Method: "GET", Route: rt.route,
		Path: "/v1/members/" + sub, Status: 200, Bytes: 512, LatencyUS: 900,
		SrcIP: fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)), Country: "KR", ASN: 4766,
		UserAgent: "shop-app/5.1", Token: event.Token{JTI: fmt.Sprintf("jti-%d", i), KID: "k-live", Sub: sub,
			Aud: "shop", IAT: t.Unix() - 60, EXP: t.Unix() + 600},
		Verdict: event.Allow, Subject: sub, DataClasses: rt.classes,
	}
	switch x := r.Float64(); {
	case x < cfg.Attack:
		ev.Token.KID = "k-stolen"
		ev.Token.JTI = fmt.Sprintf("forged-%d", i)
		ev.SrcIP = fmt.Sprintf("45.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254))
		ev.Country, ev.ASN, ev.UserAgent = []string{"CN", "SG", "US"}[r.IntN(3)], 45090, "python-requests/2.31"
		switch y := r.Float64(); {
		case y < 0.1:
			ev.Verdict, ev.Reason, ev.Status = event.Deny, event.ReasonDecoySubject, 401
		case y < 0.15:
			ev.Status = 500
		}
	case x < cfg.Attack*1.05:
		// The attacker's own network with a legitimate key (a stolen session).
		ev.SrcIP = fmt.Sprintf("203.0.113.%d", 1+r.IntN(254))
		ev.Country, ev.ASN = "US", 64500
	case x < cfg.Attack*1.05+0.02:
		ev.Verdict, ev.Reason, ev.Status = event.Deny, event.ReasonExpired, 401
	}
	return ev
}

// truth is the expected scope of a predicate, computed independently of SQL.
type truth struct {
	subjects  map[string]*Exposure
	exposures int64
	attempts  int64
	routes    map[string][3]int64 // exposures, subjects, attempts
}

func exposes(ev *event.Access) bool {
	return ev.Verdict == event.Allow && ev.Status >= 200 && ev.Status <= 299 && ev.Subject != "" && len(ev.DataClasses) > 0
}

func computeTruth(evs []event.Access, match func(*event.Access) bool) truth {
	tr := truth{subjects: map[string]*Exposure{}, routes: map[string][3]int64{}}
	routeSubj := map[string]map[string]bool{}
	for i := range evs {
		ev := &evs[i]
		if !match(ev) {
			continue
		}
		rc := tr.routes[ev.Route]
		if !exposes(ev) {
			tr.attempts++
			rc[2]++
			tr.routes[ev.Route] = rc
			continue
		}
		tr.exposures++
		rc[0]++
		if routeSubj[ev.Route] == nil {
			routeSubj[ev.Route] = map[string]bool{}
		}
		routeSubj[ev.Route][ev.Subject] = true
		rc[1] = int64(len(routeSubj[ev.Route]))
		tr.routes[ev.Route] = rc
		e := tr.subjects[ev.Subject]
		t := ev.Time.UTC().Truncate(time.Microsecond)
		if e == nil {
			e = &Exposure{Subject: ev.Subject, Member: true, First: t, Last: t}
			tr.subjects[ev.Subject] = e
		}
		for _, c := range ev.DataClasses {
			if !slices.Contains(e.DataClasses, c) {
				e.DataClasses = append(e.DataClasses, c)
			}
		}
		if t.Before(e.First) {
			e.First = t
		}
		if t.After(e.Last) {
			e.Last = t
		}
	}
	for _, e := range tr.subjects {
		slices.Sort(e.DataClasses)
	}
	return tr
}

func inPrefix(p string) func(string) bool {
	pfx := netip.MustParsePrefix(p)
	return func(ip string) bool {
		a, err := netip.ParseAddr(ip)
		return err == nil && pfx.Contains(a)
	}
}
