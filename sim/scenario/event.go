package scenario

import (
	"strconv"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/shop"
)

// routeClasses holds each route's data classes, shared read-only by every
// event Access builds.
var routeClasses = func() map[string][]string {
	m := map[string][]string{}
	for _, r := range shop.Routes() {
		m[r.Pattern] = r.DataClasses
	}
	return m
}()

// Access returns the access event a gateway would emit for r, with the
// request's side filled in (time, request_id, method, route, path, status,
// src_ip, country, asn, user_agent, token jti and sub, subject,
// data_classes) and the decision left to the caller: Verdict, Reason, and
// Status if the gateway refused. DataClasses is shared: do not modify it.
func (r *Request) Access(gateway string) event.Access {
	var ev event.Access
	r.AccessInto(gateway, &ev)
	return ev
}

// AccessInto is Access writing into ev (every field is set). Requests from
// [Scenario.NextInto] carry their ID and address as text, so it allocates
// nothing.
func (r *Request) AccessInto(gateway string, ev *event.Access) {
	id, addr := r.ID, r.Addr
	if id == "" {
		id = "r" + strconv.FormatUint(r.Seq, 10)
	}
	if addr == "" {
		addr = r.SrcIP.String()
	}
	*ev = event.Access{
		Time:        r.Time,
		Gateway:     gateway,
		RequestID:   id,
		Method:      r.Method,
		Route:       r.Route,
		Path:        r.Path,
		Status:      r.Status,
		SrcIP:       addr,
		Country:     r.Country,
		ASN:         r.ASN,
		UserAgent:   r.UserAgent,
		Token:       event.Token{JTI: r.TokenID, Sub: r.Member},
		Subject:     r.Member,
		DataClasses: routeClasses[r.Route],
	}
}
