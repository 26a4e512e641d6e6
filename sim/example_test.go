package sim_test

import (
	"context"
	"fmt"

	"github.com/custos-dev/custos/sim"
	"github.com/custos-dev/custos/sim/scenario"
)

func ExampleBaseline() {
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.0001
	s, err := scenario.New(cfg)
	if err != nil {
		panic(err)
	}
	baseline := sim.NewBaseline(s)
	if err := sim.Run(context.Background(), s, nil, baseline); err != nil {
		panic(err)
	}
	w := baseline.World()
	fmt.Println("served", w.ForgedServed, "of", w.ForgedSent, "forged requests")
	fmt.Println("members exposed:", w.MembersExposed, "of", s.Population().Members)
	// Output:
	// served 23585 of 23585 forged requests
	// members exposed: 3370 of 3370
}
