package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime/pprof"
	"time"

	"github.com/google/pprof/profile"
)

// The load generator shares the machine and the process with what it
// measures. Its goroutines carry this profiler label, so a CPU profile of the
// run tells the server's share of the CPU from the generator's.
const (
	labelKey       = "bench"
	labelGenerator = "load-generator"
)

// asGenerator runs fn with the generator's label; goroutines fn starts
// (workers, and the HTTP client's connection goroutines they cause) inherit it.
func asGenerator(ctx context.Context, fn func(context.Context)) {
	pprof.Do(ctx, pprof.Labels(labelKey, labelGenerator), fn)
}

// CPUSplit is the process CPU time of a run, divided by the profiler's
// samples into the load generator's part and the rest (the server, and the
// runtime's background work such as the garbage collector's workers).
type CPUSplit struct {
	Total     time.Duration `json:"total_ns"`
	Generator time.Duration `json:"generator_ns"`
	Server    time.Duration `json:"server_ns"`
	Samples   int64         `json:"samples"`
}

// measureSplit runs fn under the CPU profiler (writing the profile to extra
// too when it is not nil) and returns the split of the process CPU time.
func measureSplit(extra io.Writer, fn func() error) (CPUSplit, error) {
	var buf bytes.Buffer
	w := io.Writer(&buf)
	if extra != nil {
		w = io.MultiWriter(&buf, extra)
	}
	if err := pprof.StartCPUProfile(w); err != nil {
		return CPUSplit{}, fmt.Errorf("failed to start the CPU profile: %w", err)
	}
	c0 := processCPU()
	err := fn()
	total := processCPU() - c0
	pprof.StopCPUProfile()
	if err != nil {
		return CPUSplit{}, err
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		return CPUSplit{}, fmt.Errorf("failed to read the CPU profile: %w", err)
	}
	var all, gen int64
	for _, s := range p.Sample {
		n := s.Value[0] // samples
		all += n
		for _, v := range s.Label[labelKey] {
			if v == labelGenerator {
				gen += n
				break
			}
		}
	}
	out := CPUSplit{Total: total, Samples: all}
	if all > 0 {
		out.Generator = time.Duration(float64(total) * float64(gen) / float64(all))
	}
	out.Server = total - out.Generator
	return out, nil
}
