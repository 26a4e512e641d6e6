package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/shop"
)

// Options are the knobs every benchmark shares.
type Options struct {
	Duration    time.Duration // of each measured phase
	Concurrency int           // closed-loop workers; 0 picks the benchmark's default
	Dir         string        // parent of the temporary data directories; "" is os.TempDir()
	// CPUProfile, when set, receives a CPU profile of the main measured phase
	// only (issuance load; the gateway's peak phase, both proxies).
	CPUProfile io.Writer
	// Client is the issuance load generator's HTTP client: "lean" (the
	// default, rawConn) or "net/http".
	Client string
	// Redis, when set (redis://host:port/db), puts the server's issuance
	// ledger on Redis instead of the embedded SQLite one.
	Redis string
}

// profiled runs fn under the CPU profiler when o.CPUProfile is set.
func (o Options) profiled(fn func() error) error {
	if o.CPUProfile == nil {
		return fn()
	}
	if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
		return fmt.Errorf("failed to start the CPU profile: %w", err)
	}
	defer pprof.StopCPUProfile()
	return fn()
}

func (o Options) duration() time.Duration {
	if o.Duration <= 0 {
		return 5 * time.Second
	}
	return o.Duration
}

func (o Options) concurrency(def int) int {
	if o.Concurrency <= 0 {
		return def
	}
	return o.Concurrency
}

// running is a full custos server (custos serve, embedded default: sealed
// keyring, SQLite ledger) on loopback in this process.
type running struct {
	s      *server.Server
	apiURL string
	gwURL  string // "" without a gateway
	stop   func()
}

// startServer opens a server in a fresh data directory under dir, serving its
// API (and the in-process gateway in front of upstream when it is not "") on
// 127.0.0.1 ports; edit, when given, changes the configuration first.
func startServer(ctx context.Context, dir, upstream, redis string, edit ...func(*config.Config)) (*running, error) {
	data, err := os.MkdirTemp(dir, "custos-bench-")
	if err != nil {
		return nil, fmt.Errorf("failed to create the data directory: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(data)
		return nil, fmt.Errorf("failed to listen: %w", err)
	}
	var gw net.Listener
	cfg := config.Default()
	cfg.Data = filepath.Join(data, "data")
	cfg.Issuer = "http://" + ln.Addr().String()
	cfg.Scale.Redis = redis
	if upstream != "" {
		if gw, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			ln.Close()
			os.RemoveAll(data)
			return nil, fmt.Errorf("failed to listen: %w", err)
		}
		cfg.Gateway.Upstream = upstream
		for _, r := range shop.Routes() {
			cfg.Gateway.Routes = append(cfg.Gateway.Routes, config.Route{Pattern: "GET " + r.Pattern, DataClasses: r.DataClasses, SubjectParam: r.SubjectParam})
		}
	}
	for _, e := range edit {
		e(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		ln.Close()
		if gw != nil {
			gw.Close()
		}
		os.RemoveAll(data)
		return nil, fmt.Errorf("failed to open the server: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx, ln, gw) }()
	r := &running{s: s, apiURL: "http://" + ln.Addr().String()}
	if gw != nil {
		r.gwURL = "http://" + gw.Addr().String()
	}
	r.stop = func() {
		cancel()
		<-done
		s.Close()
		os.RemoveAll(data)
	}
	if err := waitReady(ctx, r.apiURL+"/healthz"); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("bench: the server did not become ready")
}

// serveLoopback serves h on a fresh 127.0.0.1 port until the returned stop.
func serveLoopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("failed to listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}
