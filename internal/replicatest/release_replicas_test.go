package replicatest

import (
	"fmt"
	"net/url"
	"sort"
	"testing"
	"time"
)

// An operator's country hold placed at one authority and released at the
// other: both standalone gateways (one following each authority) serve the
// country again, measured from the release, three times over; a gateway
// started after the releases enforces the hold still in force on another
// country and none of the released ones.
func TestCountryHoldReleaseAcrossReplicas(t *testing.T) {
	c := newCountryHolds(t, map[string]string{"203.0.113.0/24": "CN", "192.0.2.0/24": "RU", "198.51.100.0/24": "KR"})
	d, a1, a2, admin, gws, member, tok, tokFile, extra := c.d, c.a1, c.a2, c.admin, c.gws, c.member, c.tok, c.tokFile, c.extra
	const cn, ru = "203.0.113.50", "192.0.2.50"
	reachAll(t, time.Now(), 10*time.Second, "served from CN before the hold", gws, func(g *proc) bool { return gatewayServes(g, tok, member, cn) })

	type hold struct {
		ID     string    `json:"id"`
		Target string    `json:"target"`
		Until  time.Time `json:"until"`
	}
	place := func(cc, reason string) hold {
		t.Helper()
		var h hold
		if st, err := call("POST", a1.url()+"/v1/containment", admin, map[string]string{"action": "block_country", "target": cc,
			"for": "1h", "reason": reason}, &h); err != nil || st != 201 {
			t.Fatalf("hold on %s: %d %v", cc, st, err)
		}
		return h
	}
	// A hold on RU stays in force throughout.
	place("RU", "credential stuffing from RU, incident 41")
	reachAll(t, time.Now(), 10*time.Second, "refused from RU", gws, func(g *proc) bool { return gatewayRefuses(g, tok, member, ru, "blocked_source") })

	var took []time.Duration
	for run := 1; run <= 3; run++ {
		placed := time.Now()
		h := place("CN", fmt.Sprintf("tokens replayed from CN, incident 42 (run %d)", run))
		reachAll(t, placed, 10*time.Second, "refused from CN as blocked_source", gws, func(g *proc) bool { return gatewayRefuses(g, tok, member, cn, "blocked_source") })
		var rel struct {
			ID     string `json:"id"`
			Target string `json:"target"`
			Actor  string `json:"actor"`
			Reason string `json:"reason"`
		}
		released := time.Now()
		if st, err := call("DELETE", a2.url()+"/v1/containment/"+h.ID+"?reason="+url.QueryEscape("a false alarm: our own customers"), admin, nil, &rel); err != nil || st != 200 {
			t.Fatalf("release at a2: %d %v", st, err)
		}
		if rel.ID != h.ID || rel.Target != "CN" || rel.Actor == "" || rel.Reason != "a false alarm: our own customers" {
			t.Fatalf("release %+v", rel)
		}
		off := reachAll(t, released, 10*time.Second, "served from CN after the release", gws, func(g *proc) bool { return gatewayServes(g, tok, member, cn) })
		t.Logf("run %d: hold placed at a1, released at a2: CN served again at g1 (follows a1) after %s, at g2 (follows a2) after %s",
			run, off["g1"].Round(time.Millisecond), off["g2"].Round(time.Millisecond))
		took = append(took, max(off["g1"], off["g2"]))
		for _, g := range gws {
			if !gatewayRefuses(g, tok, member, ru, "blocked_source") {
				t.Fatalf("run %d: releasing the CN hold lifted the RU hold at %s", run, g.name)
			}
		}
		if st, _ := call("DELETE", a1.url()+"/v1/containment/"+h.ID+"?reason=again", admin, nil, nil); st != 404 {
			t.Fatalf("run %d: a second release at a1: %d, want 404", run, st)
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("release → served at both gateways: min %s, max %s over %d runs", took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), len(took))

	// Neither authority lists a released hold; a gateway started now
	// enforces RU and not CN.
	for _, a := range []*proc{a1, a2} {
		var list struct {
			Holds []hold `json:"holds"`
		}
		if _, err := call("GET", a.url()+"/v1/containment", admin, nil, &list); err != nil || len(list.Holds) != 1 || list.Holds[0].Target != "RU" {
			t.Fatalf("%s lists %+v (%v), want the RU hold only", a.name, list.Holds, err)
		}
	}
	g3 := d.gatewayWith("g3", tokFile, extra, a2, a1)
	g3.waitReady(30 * time.Second)
	pollUntil(t, 10*time.Second, "g3 refuses RU", func() bool { return gatewayRefuses(g3, tok, member, ru, "blocked_source") })
	if !gatewayServes(g3, tok, member, cn) {
		t.Fatal("a gateway started after the release enforces the released CN hold")
	}
}
