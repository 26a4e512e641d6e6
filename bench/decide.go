package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/custos-dev/custos/examples"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/gateway/extauthz"
	"github.com/custos-dev/custos/shop"
)

// Targets of the decision API issue.
const (
	DecideNginxRatioTarget = 0.50
	DecideOwnP99Target     = 50 * time.Microsecond
)

// decideTokens is how many distinct tokens (and members) the decision
// benchmark cycles through, each on its own subject-bound route.
const decideTokens = 1000

// Decide is what the decision API benchmark measured.
type Decide struct {
	Tokens int `json:"tokens"`
	// nginx in front of the sample shop alone, and with auth_request to
	// the decision API (examples/nginx/nginx.conf), side by side; closed
	// loop. Absent when nginx is not installed.
	NginxAlone *Load    `json:"nginx_alone,omitempty"`
	NginxAuth  *Load    `json:"nginx_auth_request,omitempty"`
	NginxRatio float64  `json:"nginx_ratio,omitempty"`
	NginxMet   bool     `json:"nginx_met"`
	NginxSkip  string   `json:"nginx_skipped,omitempty"`
	HTTP       Endpoint `json:"http"` // GET /v1/decide alone
	GRPC       Endpoint `json:"grpc"` // ext_authz Check alone
	// The decision's own time (Gateway.Answer, in process, one goroutine,
	// warm tokens), timed one by one.
	OwnN   int           `json:"own_decisions"`
	OwnP50 time.Duration `json:"own_p50_ns"`
	OwnP99 time.Duration `json:"own_p99_ns"`
	OwnMet bool          `json:"own_p99_met"`
}

// Endpoint is one decision endpoint under closed-loop load.
type Endpoint struct {
	Load Load     `json:"load"`
	CPU  CPUSplit `json:"cpu"`
	// ServerCPUPerDecision is the process CPU outside the load generator
	// per decision answered (the gateway, its access events and detection).
	ServerCPUPerDecision time.Duration `json:"server_cpu_per_decision_ns"`
	// From custos_gateway_overhead_seconds in the same phase: upper bounds
	// of the buckets holding the quantiles of the decision's own time.
	OverheadN   uint64        `json:"overhead_decisions"`
	OverheadP50 time.Duration `json:"overhead_p50_ns"`
	OverheadP99 time.Duration `json:"overhead_p99_ns"`
}

// RunDecide starts the sample shop and a full server, serves the in-process
// gateway's decision API over HTTP and gRPC on loopback, issues
// decideTokens tokens for as many members, and measures: nginx alone
// against nginx with auth_request (when nginx is installed), each endpoint
// alone (decisions/s, CPU per decision, the decision's own quantiles), and
// the decision's own p99 in process.
func RunDecide(ctx context.Context, o Options) (Decide, error) {
	sh, err := shop.New(benchPopulation)
	if err != nil {
		return Decide{}, err
	}
	upURL, stopUp, err := serveLoopback(sh)
	if err != nil {
		return Decide{}, err
	}
	defer stopUp()
	r, err := startServer(ctx, o.Dir, upURL, o.Redis)
	if err != nil {
		return Decide{}, err
	}
	defer r.stop()
	g := r.s.Gateway
	decideURL, stopDecide, err := serveLoopback(g.DecisionHandler())
	if err != nil {
		return Decide{}, err
	}
	defer stopDecide()
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Decide{}, err
	}
	gs := grpc.NewServer()
	extauthz.New(g).Register(gs)
	go gs.Serve(gln)
	defer gs.Stop()

	client, err := benchClient(ctx, r)
	if err != nil {
		return Decide{}, err
	}
	toks, paths, err := issueMany(ctx, r, client, decideTokens)
	if err != nil {
		return Decide{}, err
	}
	auth := make([]string, len(toks))
	for i, t := range toks {
		auth[i] = "Bearer " + t
	}
	pick := func(w, seq int) int { return (w*31 + seq) % len(paths) }
	decideReq := func(w, seq int) (*http.Request, error) {
		i := pick(w, seq)
		req, err := http.NewRequestWithContext(ctx, "GET", decideURL+gateway.DecidePath, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", paths[i])
		req.Header.Set("Authorization", auth[i])
		return req, nil
	}
	// Warm the verified-token cache, and check that every token is allowed.
	for i := range paths {
		req, _ := decideReq(0, i)
		if err := send(http.DefaultClient, req); err != nil {
			return Decide{}, fmt.Errorf("warm-up decision: %w", err)
		}
	}
	out := Decide{Tokens: len(toks)}
	workers := o.concurrency(64)
	d := o.duration()

	if err := o.profiled(func() error { return nginxPhase(ctx, o, upURL, decideURL, workers, d, paths, auth, &out) }); err != nil {
		return out, err
	}

	measure := func(ep *Endpoint, run func() (Load, error)) error {
		before := histCounts(g.Overhead())
		var l Load
		cpu, err := measureSplit(nil, func() (err error) { l, err = run(); return err })
		if err != nil {
			return err
		}
		after := histCounts(g.Overhead())
		ep.Load, ep.CPU = l, cpu
		if l.Completed > 0 {
			ep.ServerCPUPerDecision = cpu.Server / time.Duration(l.Completed)
		}
		ep.OverheadN = after[len(after)-1] - before[len(before)-1]
		ep.OverheadP50 = quantileBound(before, after, gateway.OverheadBuckets, 0.50)
		ep.OverheadP99 = quantileBound(before, after, gateway.OverheadBuckets, 0.99)
		return nil
	}
	if err := measure(&out.HTTP, func() (Load, error) { return ClosedLoop(ctx, workers, d, decideReq) }); err != nil {
		return out, fmt.Errorf("HTTP decisions: %w", err)
	}
	conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return out, err
	}
	defer conn.Close()
	ac := authv3.NewAuthorizationClient(conn)
	reqs := make([]*authv3.CheckRequest, len(paths))
	for i := range paths {
		reqs[i] = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: paths[i], Host: "shop.example", Scheme: "http",
				Headers: map[string]string{"authorization": auth[i], "user-agent": "custos-bench"}},
		}}}
	}
	grpcLoop := func() (Load, error) {
		return closedLoop(ctx, workers, d, func(w int) (func(seq int) error, func()) {
			return func(seq int) error {
				resp, err := ac.Check(ctx, reqs[pick(w, seq)])
				if err != nil {
					return err
				}
				if c := resp.GetStatus().GetCode(); c != int32(codes.OK) {
					return fmt.Errorf("check refused: %s", resp.GetStatus().GetMessage())
				}
				return nil
			}, func() {}
		})
	}
	if err := measure(&out.GRPC, grpcLoop); err != nil {
		return out, fmt.Errorf("gRPC decisions: %w", err)
	}

	// The decision's own time, one decision at a time.
	n := int(min(max(d.Seconds()*20000, 20000), 200000))
	lat := make([]time.Duration, n)
	q := gateway.Query{Request: gateway.Request{Method: "GET", Peer: "127.0.0.1:40000"}}
	hdrs := make([]http.Header, len(auth))
	for i := range auth {
		hdrs[i] = http.Header{"Authorization": {auth[i]}, "User-Agent": {"custos-bench"}}
	}
	for i := range n {
		j := i % len(paths)
		q.Target, q.Header = paths[j], hdrs[j]
		t := time.Now()
		v := g.Answer(ctx, q)
		lat[i] = time.Since(t)
		if !v.Allowed() {
			return out, fmt.Errorf("in-process decision refused: %s", v.Reason)
		}
	}
	slices.Sort(lat)
	out.OwnN, out.OwnP50, out.OwnP99 = n, percentile(lat, 0.50), percentile(lat, 0.99)
	out.OwnMet = out.OwnP99 <= DecideOwnP99Target
	return out, nil
}

// nginxPhase runs nginx alone (a plain proxy_pass to the shop) and nginx
// with the decision API (examples/nginx/nginx.conf) side by side.
func nginxPhase(ctx context.Context, o Options, upURL, decideURL string, workers int, d time.Duration, paths, auth []string, out *Decide) error {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		out.NginxSkip = "nginx is not installed"
		return nil
	}
	dir, err := os.MkdirTemp(o.Dir, "custos-bench-nginx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	shopAddr, decideAddr := strings.TrimPrefix(upURL, "http://"), strings.TrimPrefix(decideURL, "http://")
	alone, withAuth := freeAddr(), freeAddr()
	bare := fmt.Sprintf(`worker_processes auto;
events {}
http {
    access_log off;
    upstream shop { server %s; keepalive 64; }
    server {
        listen %s;
        location / {
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, shopAddr, alone)
	conf := strings.NewReplacer("127.0.0.1:8080", shopAddr, "127.0.0.1:7780", decideAddr, "127.0.0.1:8000", withAuth).Replace(examples.Nginx)
	for name, c := range map[string]string{"alone": bare, "auth": conf} {
		sub := filepath.Join(dir, name)
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(sub, "nginx.conf"), []byte(c), 0o600); err != nil {
			return err
		}
		cmd := exec.Command(bin, "-p", sub, "-c", filepath.Join(sub, "nginx.conf"), "-e", filepath.Join(sub, "error.log"),
			"-g", "daemon off; pid "+filepath.Join(sub, "nginx.pid")+";")
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("failed to start nginx: %w", err)
		}
		defer func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			_ = cmd.Wait()
		}()
	}
	for _, a := range []string{alone, withAuth} {
		if err := waitListening(ctx, a); err != nil {
			return fmt.Errorf("nginx: %w", err)
		}
	}
	target := func(addr string) RequestFunc {
		base := "http://" + addr
		return func(w, seq int) (*http.Request, error) {
			i := (w*31 + seq) % len(paths)
			req, err := http.NewRequestWithContext(ctx, "GET", base+paths[i], nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", auth[i])
			return req, nil
		}
	}
	closed := func(t RequestFunc, d time.Duration) (Load, error) { return ClosedLoop(ctx, workers, d, t) }
	a, b, err := sideBySide(d, closed, target(alone), target(withAuth))
	if err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	out.NginxAlone, out.NginxAuth = &a, &b
	out.NginxRatio = b.PerSec / a.PerSec
	out.NginxMet = out.NginxRatio >= DecideNginxRatioTarget
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening waits up to ten seconds for something to accept on addr.
func waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
