package forensics

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/custos-dev/custos/event"
)

// TestScopeMixedSubjectsAndSources checks the scope where subjects are not
// all canonical numbers (text, leading zeros, "0", empty) and sources are not
// all IPv4: the numeric fast paths must not change any figure.
func TestScopeMixedSubjectsAndSources(t *testing.T) {
	dir := t.TempDir()
	cfg := genConfig{Seed: 11, Hours: 3, PerHour: 3000, Members: 500, Attack: 0.3}
	r := rand.New(rand.NewPCG(cfg.Seed, 1))
	evs := make([]event.Access, cfg.Hours*cfg.PerHour)
	w, err := NewWriter(dir, WriterOptions{RowGroupRows: 1000, PartRows: 2500})
	if err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		ev := genEvent(r, cfg, i)
		switch i % 10 {
		case 1:
			ev.Subject = "m-" + ev.Subject
		case 2:
			ev.Subject = "0" + ev.Subject
		case 3:
			ev.Subject = "0"
		case 4:
			ev.Subject = ""
		case 5:
			ev.SrcIP = "2001:db8::" + strings.ToLower(ev.Subject[len(ev.Subject)-1:])
		case 6:
			ev.SrcIP = "0.0.0.0"
		case 7:
			ev.SrcIP = []string{"9.9.9.9", "10.1.1.1", "100.1.1.1", "9.10.0.1", "99.0.0.1"}[i%5]
		}
		evs[i] = ev
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, Options{})
	var manyPrefixes []string
	for i := range inlineLimit + 44 {
		manyPrefixes = append(manyPrefixes, fmt.Sprintf("ip:10.%d.%d.0/24", i/128, i%128*2))
	}
	tests := []struct {
		name  string
		specs []string
		match func(*event.Access) bool
	}{
		{"ok/stolen-key", []string{"kid:k-stolen"}, func(e *event.Access) bool { return e.Token.KID == "k-stolen" }},
		{"ok/v6-source", []string{"ip:2001:db8::1", "kid:k-live"}, func(e *event.Access) bool {
			return e.SrcIP == "2001:db8::1" || e.Token.KID == "k-live"
		}},
		// A prefix from 0.0.0.0: that address has no src_ip4 and must still match.
		{"ok/prefix-from-zero", []string{"ip:0.0.0.0/1"}, func(e *event.Access) bool { return inPrefix("0.0.0.0/1")(e.SrcIP) }},
		// More ranges than are inlined: they are joined from a table.
		{"ok/many-prefixes", manyPrefixes, func(e *event.Access) bool {
			for _, p := range manyPrefixes {
				if inPrefix(strings.TrimPrefix(p, "ip:"))(e.SrcIP) {
					return true
				}
			}
			return false
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, err := ParseIndicators(tc.specs)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := s.Scope(context.Background(), ind, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			checkTruth(t, sc, computeTruth(evs, tc.match))
			// Sources: every address, exposures and attempts, top by volume
			// then by text.
			ips := map[string]*Count{}
			for i := range evs {
				e := &evs[i]
				if !tc.match(e) {
					continue
				}
				ip := canonicalIP(e.SrcIP)
				c := ips[ip]
				if c == nil {
					c = &Count{Key: ip}
					ips[ip] = c
				}
				if exposes(e) {
					c.Exposures++
				} else {
					c.Attempts++
				}
			}
			var want []Count
			for _, c := range ips {
				want = append(want, *c)
			}
			slices.SortFunc(want, func(a, b Count) int {
				if d := (b.Exposures + b.Attempts) - (a.Exposures + a.Attempts); d != 0 {
					return int(d)
				}
				return strings.Compare(a.Key, b.Key)
			})
			want = want[:min(len(want), TopSources)]
			if sc.Sources.DistinctIPs != int64(len(ips)) {
				t.Fatalf("distinct IPs: got %d, want %d", sc.Sources.DistinctIPs, len(ips))
			}
			if !slices.Equal(sc.Sources.IPs, want) {
				t.Fatalf("top IPs:\ngot  %v\nwant %v", sc.Sources.IPs, want)
			}
		})
	}
}
