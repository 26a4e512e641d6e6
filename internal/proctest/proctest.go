// Package proctest runs the custos binary as separate processes in tests:
// built once per test binary, started on loopback addresses with its own
// arguments and environment, killed with SIGKILL when the test ends, and its
// output kept for the failure log. Its Proxy cuts a process off from a
// server (an engine) for fault tests.
package proctest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// Binary builds cmd/custos once for the test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "custos-proctest-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "custos")
		buildOut, buildErr = exec.Command("go", "build", "-o", binPath, "github.com/custos-dev/custos/cmd/custos").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

// FreeAddr returns a loopback address no one listens on at the moment and
// that no other caller of FreeAddr, in this or any other test binary on the
// machine, is handed while this binary runs.
//
// A port picked by listening on port 0 and closing is taken from the kernel's
// ephemeral range, where every outgoing connection and every other test's
// port-0 listener also draws, so by the time a process binds it the port may
// be gone. FreeAddr picks below (or above) the ephemeral range instead, and
// holds an flock on a per-port file under the temp dir for as long as the
// test binary lives (the kernel drops it when the binary exits, however it
// exits), so concurrent test binaries never pick the same port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	_, p, err := net.SplitHostPort(FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

var (
	portMu    sync.Mutex
	portLocks []*os.File // held until the test binary exits
)

func freeAddr() (string, error) {
	lo, hi := portRange()
	dir := filepath.Join(os.TempDir(), "custos-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	portMu.Lock()
	defer portMu.Unlock()
	for try := 0; try < 1000; try++ {
		port := lo + rand.IntN(hi-lo)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return "", err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another test binary holds it
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close() // in use by something that is not a test of ours
			continue
		}
		ln.Close()
		portLocks = append(portLocks, f)
		return addr, nil
	}
	return "", fmt.Errorf("no free loopback port in [%d, %d) after 1000 tries", lo, hi)
}

// portRange is where FreeAddr picks: the larger of the spans below and above
// the kernel's ephemeral range (read from procfs; Linux's default when
// unreadable), above the privileged ports.
func portRange() (lo, hi int) {
	elo, ehi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, err1 := strconv.Atoi(f[0])
			b, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && a <= b {
				elo, ehi = a, b
			}
		}
	}
	below := [2]int{10000, elo}
	if below[1] < below[0] {
		below = [2]int{1024, elo}
	}
	above := [2]int{ehi + 1, 65536}
	if below[1]-below[0] >= above[1]-above[0] {
		return below[0], below[1]
	}
	return above[0], above[1]
}

// Output collects a process's standard output and error; it is safe for
// concurrent use.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Proc is a running process.
type Proc struct {
	Out    *Output
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs bin with args (and env added to this process's environment)
// until the test ends, when it is killed with SIGKILL; if the test failed,
// its output is logged.
func Start(t testing.TB, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Out: &Output{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s %v:\n%s", filepath.Base(bin), args, p.Out)
		}
	})
	return p
}

// StartGroup runs bin in a process group of its own (a server that forks
// workers, like nginx) until the test ends, when the group gets SIGTERM and,
// 10 s later, SIGKILL; if the test failed, its output is logged.
func StartGroup(t testing.TB, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Out: &Output{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s %v:\n%s", filepath.Base(bin), args, p.Out)
		}
	})
	return p
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Exited is closed once the process has ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// WaitFor polls f every 100 ms until it holds, failing the test after 30 s.
func WaitFor(t testing.TB, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// WaitHTTP waits until GET url answers 200 (e.g. a /healthz).
func WaitHTTP(t testing.TB, url string) {
	t.Helper()
	WaitFor(t, url, func() bool {
		r, err := http.Get(url)
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == http.StatusOK
	})
}
