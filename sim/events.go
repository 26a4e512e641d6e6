package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
		{Name: "custos, DPoP-bound tokens", DPoP: true},
	}
}

// WorldsNamed picks worlds from DefaultWorlds by short name: custos, copied,
// observe, nolifecycle, dpop; "all" is every one.
func WorldsNamed(names []string) ([]CustosOptions, error) {
	all := DefaultWorlds()
	short := []string{"custos", "copied", "observe", "nolifecycle", "dpop"}
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

// chunkSize is how many consecutive requests the stream hands every world at once.
const chunkSize = 4096

// chunk is a run of consecutive requests of the stream, shared read-only by
// every world; the last world done with it hands it back for reuse.
type chunk struct {
	reqs []scenario.Request
	refs atomic.Int32
}

// chunks recycles chunks between the stream and the worlds.
type chunks struct{ free chan *chunk }

func (f *chunks) get() *chunk {
	select {
	case c := <-f.free:
		return c
	default:
		return &chunk{reqs: make([]scenario.Request, chunkSize)}
	}
}

func (f *chunks) release(c *chunk) {
	if c.refs.Add(-1) == 0 {
		select {
		case f.free <- c:
		default:
		}
	}
}

// stream generates s once, in chunks, and hands every chunk to every world
// (outs) in order; it closes outs at the end.
func stream(ctx context.Context, s *scenario.Scenario, f *chunks, outs []chan *chunk) error {
	defer func() {
		for _, o := range outs {
			close(o)
		}
	}()
	for {
		c := f.get()
		c.reqs = c.reqs[:chunkSize]
		n := 0
		for n < chunkSize && s.NextInto(&c.reqs[n]) {
			n++
		}
		if n == 0 {
			return nil
		}
		c.reqs = c.reqs[:n]
		c.refs.Store(int32(len(outs)))
		for _, o := range outs {
			select {
			case o <- c:
			case <-ctx.Done():
				return fmt.Errorf("failed to finish the replay: %w", ctx.Err())
			}
		}
		if n < chunkSize {
			return nil
		}
	}
}

// RunEvents replays the scenario straight into detection and forensics for
// the baseline and every custos world. The stream is generated once and
// shared; each world decides every request itself, then hands its events to
// detection in batches and to its event store, each stage on its own
// goroutine, so the worlds and their stages use every core.
func RunEvents(ctx context.Context, o EventsOptions, progress func(done, expected uint64)) (Report, error) {
	if o.Worlds == nil {
		o.Worlds = DefaultWorlds()
	}
	s, err := scenario.New(o.Scenario)
	if err != nil {
		return Report{}, err
	}
	n := len(o.Worlds) + 1
	cws := make([]*Custos, len(o.Worlds))
	for i, wo := range o.Worlds {
		if o.ScopeDir != "" {
			wo.EventsDir = filepath.Join(o.ScopeDir, "world"+strconv.Itoa(i+1))
			if err := os.MkdirAll(wo.EventsDir, 0o750); err != nil {
				return Report{}, err
			}
		}
		if cws[i], err = NewCustos(s, wo); err != nil {
			return Report{}, err
		}
	}
	base := NewBaseline(s)

	f := &chunks{free: make(chan *chunk, 8*n)}
	outs := make([]chan *chunk, n)
	for i := range outs {
		outs[i] = make(chan *chunk, 4)
	}
	counts := make([]atomic.Uint64, n)
	worlds := make([]World, n)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	wg.Add(n)
	// Each world's goroutines carry its name as a profiler label ("world"),
	// so a CPU profile splits the cost per world.
	go pprof.Do(ctx, pprof.Labels("world", "baseline"), func(context.Context) {
		defer wg.Done()
		for c := range outs[0] {
			for i := range c.reqs {
				base.Observe(&c.reqs[i])
			}
			counts[0].Add(uint64(len(c.reqs)))
			f.release(c)
		}
		worlds[0] = base.World()
	})
	for i, c := range cws {
		go pprof.Do(ctx, pprof.Labels("world", c.o.Name), func(ctx context.Context) {
			defer wg.Done()
			c.consume(outs[i+1], f.release, &counts[i+1])
			if ctx.Err() == nil {
				worlds[i+1], errs[i+1] = c.World(ctx)
			}
		})
	}
	stop := make(chan struct{})
	var ticker sync.WaitGroup
	if progress != nil {
		ticker.Add(1)
		go func() {
			defer ticker.Done()
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					progress(slowest(counts), s.Expected())
				}
			}
		}()
	}
	pprof.Do(ctx, pprof.Labels("world", "stream"), func(ctx context.Context) { errs[n] = stream(ctx, s, f, outs) })
	wg.Wait()
	close(stop)
	ticker.Wait()
	if progress != nil {
		progress(slowest(counts), s.Expected())
	}
	for _, err := range errs {
		if err != nil {
			return Report{}, err
		}
	}
	return NewReport(s, "events", worlds...), nil
}

// slowest returns the requests done by the world furthest behind.
func slowest(counts []atomic.Uint64) uint64 {
	m := counts[0].Load()
	for i := range counts[1:] {
		m = min(m, counts[i+1].Load())
	}
	return m
}
