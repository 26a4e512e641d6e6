package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/custos-dev/custos/gateway"
)

// custos containment hold places an operator's hold that the running
// server lists and its gateway enforces; a hold on the home country or a
// bad target is refused with exit status 2 and leaves nothing.
func TestContainmentCommand(t *testing.T) {
	ls := startServer(t)
	o, e, code := cli(t, ls.admin("containment", "hold", "block_country", "KR", "--for", "1h", "--reason", "test")...)
	if code != 2 || !strings.Contains(e, "allowed_country") {
		t.Fatalf("home country: %d %q %q", code, o, e)
	}
	if _, e, code := cli(t, ls.admin("containment", "hold", "block_source", "0.0.0.0/0", "--for", "1h", "--reason", "test")...); code != 2 || !strings.Contains(e, "invalid_request") {
		t.Fatalf("whole address space: %d %q", code, e)
	}
	if _, _, code := cli(t, ls.admin("containment", "hold", "block_country", "CN", "--reason", "test")...); code != 2 {
		t.Fatalf("no --for: %d", code)
	}
	o, e, code = cli(t, ls.admin("containment", "hold", "block_country", "cn", "--for", "2h", "--reason", "replayed tokens", "--json")...)
	var h gateway.Hold
	if code != 0 || json.Unmarshal([]byte(o), &h) != nil || h.Target != "CN" || h.Action != gateway.HoldBlockCountry || h.Actor == "" {
		t.Fatalf("hold: %d %q %q", code, o, e)
	}
	o, e, code = cli(t, ls.admin("containment", "list", "--json")...)
	var list struct {
		Holds []gateway.Hold `json:"holds"`
	}
	if code != 0 || json.Unmarshal([]byte(o), &list) != nil || len(list.Holds) != 1 || list.Holds[0].ID != h.ID {
		t.Fatalf("list: %d %q %q", code, o, e)
	}
	if bs := ls.s.Gateway.CountryBlocks(); len(bs) != 1 || bs[0].Country != "CN" {
		t.Fatalf("gateway country blocks %+v", bs)
	}
	if o, _, code := cli(t, ls.admin("containment", "list")...); code != 0 || !strings.Contains(o, h.ID) || !strings.Contains(o, "replayed tokens") {
		t.Fatalf("list as text: %d %q", code, o)
	}

	// Released by hand: gone from the list; a second release, an
	// unknown id or a missing reason is refused with exit status 2.
	if _, _, code := cli(t, ls.admin("containment", "release", h.ID)...); code != 2 {
		t.Fatalf("release without --reason: %d", code)
	}
	if _, e, code := cli(t, ls.admin("containment", "release", "op-0000", "--reason", "x")...); code != 2 || !strings.Contains(e, "not_found") {
		t.Fatalf("release of an unknown hold: %d %q", code, e)
	}
	o, e, code = cli(t, ls.admin("containment", "release", h.ID, "--reason", "our own customers", "--json")...)
	var r gateway.Release
	if code != 0 || json.Unmarshal([]byte(o), &r) != nil || r.ID != h.ID || r.Target != "CN" || r.Reason != "our own customers" || r.Actor == "" {
		t.Fatalf("release: %d %q %q", code, o, e)
	}
	if o, _, code := cli(t, ls.admin("containment", "list")...); code != 0 || strings.Contains(o, h.ID) {
		t.Fatalf("list after the release: %d %q", code, o)
	}
	if _, e, code := cli(t, ls.admin("containment", "release", h.ID, "--reason", "again")...); code != 2 || !strings.Contains(e, "not_found") {
		t.Fatalf("second release: %d %q", code, e)
	}
}
