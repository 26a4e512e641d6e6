package scenario_test

import (
	"fmt"

	"github.com/custos-dev/custos/sim/scenario"
)

func Example() {
	cfg := scenario.DefaultConfig()
	cfg.Scale = 0.0001 // 3,370 members
	s, err := scenario.New(cfg)
	if err != nil {
		panic(err)
	}
	forged := 0
	for {
		r, ok := s.Next()
		if !ok {
			break
		}
		if r.Token == scenario.Forged {
			forged++
		}
	}
	fmt.Println("members:", s.Population().Members)
	fmt.Println("forged requests:", forged, "=", s.Volumes().Attack())
	fmt.Println("first forged:", s.Timeline().FirstForged.Format("2006-01-02"))
	// Output:
	// members: 3370
	// forged requests: 23585 = 23585
	// first forged: 2025-04-14
}
