package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/custos-dev/custos/event"
)

// FuzzRouteMatch: no request target can be checked as one route and
// forwarded as another. Whatever the gateway lets past its route check, the
// target it forwards (canonical path and query) is routed by Go's ServeMux
// to the route the gateway bound, with the same member, and a forgiving
// router serves it from no subject route with another member; the
// canonical form is a fixed point. In forward mode, a forwarded path that
// matched no route is served by neither router from a subject route.
func FuzzRouteMatch(f *testing.F) {
	for _, s := range attackTargets {
		f.Add(s, "GET", false)
		f.Add(s, "POST", true)
	}
	for _, s := range []string{"/api/members/1020/profile", "/static/x", "/api/catalog?x=1", "/", "*", "", "?", "/%", "http://h/a"} {
		f.Add(s, "GET", false)
	}
	routes := routeTestRoutes()
	routers := upstreamRouters(routes)
	newG := func(m Unmatched) *Gateway {
		cfg := testConfig()
		cfg.Routes, cfg.Unmatched = routes, m
		g, err := New(cfg, &fakeKeys{}, &fakeLedger{}, nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		return g
	}
	deny, forward := newG(Deny), newG(Forward)
	f.Fuzz(func(t *testing.T, target, method string, fwd bool) {
		g := deny
		if fwd {
			g = forward
		}
		d := g.Decide(context.Background(), Request{Method: method, Host: "shop.test", Target: target, Header: http.Header{}, Peer: "192.0.2.1:1234"})
		if d.Reason == event.ReasonUnknownRoute {
			return // refused before anything else
		}
		if d.Path == "" {
			t.Fatalf("%q passed the route check with no canonical path", target)
		}
		if p, ok := canonicalPath(d.Path); !ok || p != d.Path {
			t.Fatalf("%q: canonical %q is not a fixed point (%q, %v)", target, d.Path, p, ok)
		}
		if !fwd && d.Route == "" {
			t.Fatalf("%q passed in deny mode with no route", target)
		}
		forwarded := d.Path
		if d.Query != "" {
			forwarded += "?" + d.Query
		}
		for _, r := range routers {
			pat, member, ok := r.route(forwarded)
			if d.Route == "" {
				if ok && member != "" {
					t.Fatalf("%q: forwarded unbound as %q, %s serves %s for %q", target, forwarded, r.name, pat, member)
				}
				continue
			}
			if r.name == "go-servemux" && !strings.EqualFold(method, "GET") && !strings.EqualFold(method, "HEAD") {
				continue // the upstream's routes are GET-only; the gateway binds every method
			}
			if !ok {
				if r.name == "go-servemux" {
					t.Fatalf("%q: gateway bound %q, ServeMux serves nothing for %q", target, d.Route, forwarded)
				}
				continue
			}
			if r.name == "go-servemux" && pat != d.Route {
				t.Fatalf("%q: gateway bound %q, ServeMux serves %q", target, d.Route, pat)
			}
			if member != "" && member != d.Subject {
				t.Fatalf("%q: gateway bound member %q, %s serves member %q from %s", target, d.Subject, r.name, member, pat)
			}
		}
	})
}
