package bench

import (
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID

// threadClock pins the calling goroutine to its thread and returns a clock of
// that thread's CPU time (time it actually ran, not time it waited for a
// core), and a func to unpin. ok is false where the clock is unavailable.
func threadClock() (clock func() time.Duration, unpin func(), ok bool) {
	runtime.LockOSThread()
	clock = func() time.Duration {
		var ts syscall.Timespec
		if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
			return -1
		}
		return time.Duration(ts.Nano())
	}
	if clock() < 0 {
		runtime.UnlockOSThread()
		return nil, func() {}, false
	}
	return clock, runtime.UnlockOSThread, true
}

// processCPU is the process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
