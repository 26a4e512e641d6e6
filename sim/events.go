package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/custos-dev/custos/sim/scenario"
)

// DefaultWorlds are the custos worlds of the events-mode replay: everything
// on at default settings, then one layer at a time taken away.
func DefaultWorlds() []CustosOptions {
	return []CustosOptions{
		{Name: "custos"},
		{Name: "custos, key copied anyway", KeyStolenAnyway: true},
		{Name: "custos, provenance in observe mode + containment", KeyStolenAnyway: true, Observe: true, Contain: true},
		{Name: "custos, no lifecycle link", NoLifecycle: true},
	}
}

// WorldsNamed picks worlds from DefaultWorlds by short name: custos, copied,
// observe, nolifecycle; "all" is every one.
func WorldsNamed(names []string) ([]CustosOptions, error) {
	all := DefaultWorlds()
	short := []string{"custos", "copied", "observe", "nolifecycle"}
	var out []CustosOptions
	for _, n := range names {
		if n == "all" {
			return all, nil
		}
		i := slices.Index(short, n)
		if i < 0 {
			return nil, fmt.Errorf("unknown world %q (want %s or all)", n, strings.Join(short, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// EventsOptions configure the events-mode replay.
type EventsOptions struct {
	Scenario scenario.Config
	Worlds   []CustosOptions
	// ScopeDir, if set, is where each custos world writes its access events
	// (one sub-directory per world) so its time to scope can be measured.
	ScopeDir string
}

// RunEvents replays the scenario straight into detection and forensics for
// the baseline and every custos world. Each world replays its own copy of the
// (deterministic) stream in its own goroutine, so the worlds use every core.
func RunEvents(ctx context.Context, o EventsOptions, progress func(done, expected uint64)) (Report, error) {
	if o.Worlds == nil {
		o.Worlds = DefaultWorlds()
	}
	head, err := scenario.New(o.Scenario)
	if err != nil {
		return Report{}, err
	}
	n := len(o.Worlds) + 1
	counts := make([]atomic.Uint64, n)
	expected := head.Expected() * uint64(n)
	report := func() {
		if progress == nil {
			return
		}
		var done uint64
		for i := range counts {
			done += counts[i].Load()
		}
		progress(done, expected)
	}
	var progMu sync.Mutex
	worlds := make([]World, n)
	var first *scenario.Scenario
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := scenario.New(o.Scenario)
			if err != nil {
				errs[i] = err
				return
			}
			prog := func(done, _ uint64) {
				counts[i].Store(done)
				progMu.Lock()
				report()
				progMu.Unlock()
			}
			if i == 0 {
				first = s
				b := NewBaseline(s)
				if errs[i] = Run(ctx, s, prog, b); errs[i] == nil {
					worlds[i] = b.World()
				}
				return
			}
			wo := o.Worlds[i-1]
			if o.ScopeDir != "" {
				wo.EventsDir = filepath.Join(o.ScopeDir, "world"+string(rune('0'+i)))
				if errs[i] = os.MkdirAll(wo.EventsDir, 0o750); errs[i] != nil {
					return
				}
			}
			c, err := NewCustos(s, wo)
			if err != nil {
				errs[i] = err
				return
			}
			if errs[i] = Run(ctx, s, prog, c); errs[i] == nil {
				worlds[i], errs[i] = c.World(ctx)
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Report{}, err
		}
	}
	return NewReport(first, "events", worlds...), nil
}
