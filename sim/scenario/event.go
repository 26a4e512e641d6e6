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
	return event.Access{
		Time:        r.Time,
		Gateway:     gateway,
		RequestID:   "r" + strconv.FormatUint(r.Seq, 10),
		Method:      r.Method,
		Route:       r.Route,
		Path:        r.Path,
		Status:      r.Status,
		SrcIP:       r.SrcIP.String(),
		Country:     r.Country,
		ASN:         r.ASN,
		UserAgent:   r.UserAgent,
		Token:       event.Token{JTI: r.TokenID, Sub: r.Member},
		Subject:     r.Member,
		DataClasses: routeClasses[r.Route],
	}
}
