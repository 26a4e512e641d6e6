//go:build !linux

package bench

import "time"

func threadClock() (clock func() time.Duration, unpin func(), ok bool) {
	return nil, func() {}, false
}

func processCPU() time.Duration { return 0 }
