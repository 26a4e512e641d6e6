package proctest

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestFreeAddrAcrossBinaries: ports handed out are bindable, outside the
// kernel's ephemeral range, and never handed to a second test binary while
// the first still runs.
func TestFreeAddrAcrossBinaries(t *testing.T) {
	if os.Getenv("PROCTEST_CHILD") == "1" {
		var ports []string
		for i := 0; i < 40; i++ {
			ports = append(ports, strconv.Itoa(FreePort(t)))
		}
		os.Stdout.WriteString("PORTS " + strings.Join(ports, ",") + "\n")
		return
	}
	lo, hi := portRange()
	mine := map[int]bool{}
	for i := 0; i < 40; i++ {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		if mine[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		mine[p] = true
	}
	for p := range mine {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d handed out but not bindable: %v", p, err)
		}
		ln.Close()
	}
	// A second binary, while this one holds its ports, gets none of them.
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestFreeAddrAcrossBinaries$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "PROCTEST_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		_, list, ok := strings.Cut(string(out), "PORTS ")
		if !ok {
			t.Fatalf("child printed no ports:\n%s", out)
		}
		list, _, _ = strings.Cut(list, "\n")
		for _, s := range strings.Split(list, ",") {
			p, err := strconv.Atoi(s)
			if err != nil {
				t.Fatal(err)
			}
			if mine[p] {
				t.Fatalf("port %d handed to two binaries at once", p)
			}
		}
	}
}
