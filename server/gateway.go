package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/custos-dev/custos/config"
	dpopredis "github.com/custos-dev/custos/dpop/redis"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/gateway/extauthz"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger/remote"
	"github.com/custos-dev/custos/natsbus"
)

// authHeader adds a bearer credential to every request of an http.Client.
type authHeader struct {
	token string
	next  http.RoundTripper
}

func (a authHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.next.RoundTrip(r)
}

// GatewayTokenFile is where a standalone gateway looks for its credential in
// the data directory before falling back to the admin credential.
const GatewayTokenFile = "gateway-token"

// gatewayCredential finds the standalone gateway's credential for the
// authority: CUSTOS_GATEWAY_TOKEN, gateway.authority_token_file
// (--token-file), DATA/gateway-token, then DATA/admin-token. It returns the
// token and where it came from.
func gatewayCredential(cfg config.Config) (string, string, error) {
	if t := strings.TrimSpace(cfg.Gateway.AuthorityToken); t != "" {
		return t, "CUSTOS_GATEWAY_TOKEN", nil
	}
	files := []string{cfg.Gateway.AuthorityTokenFile}
	if cfg.Gateway.AuthorityTokenFile == "" {
		files = nil
		if cfg.Data != "" {
			files = []string{filepath.Join(cfg.Data, GatewayTokenFile), filepath.Join(cfg.Data, AdminTokenFile)}
		}
	}
	if len(files) == 0 {
		return "", "", errors.New("gateway: a gateway credential for the authority is needed (custos credentials add NAME --role gateway; then --token-file, CUSTOS_GATEWAY_TOKEN or DATA/gateway-token)")
	}
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b)), f, nil
		}
		if err == nil {
			err = errors.New("empty")
		}
		errs = append(errs, err)
	}
	return "", "", fmt.Errorf("failed to read the gateway credential: %w", errors.Join(errs...))
}

// checkGatewayCredential asks the authority which credential the gateway
// holds and warns when it is more than a gateway needs.
func checkGatewayCredential(ctx context.Context, hc *http.Client, base, src string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/credentials/self", nil)
	if err != nil {
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		log.Warn("could not check the gateway credential", "from", src, "err", err)
		return
	}
	defer resp.Body.Close()
	var cr struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&cr) != nil {
		log.Warn("the authority does not accept the gateway credential", "from", src, "status", resp.StatusCode)
		return
	}
	if cr.Role != "gateway" {
		log.Warn("the gateway runs with a credential that can do more than a gateway needs; make one with: custos credentials add NAME --role gateway",
			"from", src, "credential", cr.Name, "role", cr.Role)
		return
	}
	log.Info("gateway credential", "from", src, "credential", cr.Name)
}

// RunGateway runs `custos gateway`: the verifying reverse proxy as its own
// process, following the authority's keys and issuance ledger over HTTP.
func RunGateway(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	var up *url.URL
	switch {
	case cfg.Gateway.Decide && cfg.Gateway.Upstream != "":
		return errors.New("gateway: decide and upstream exclude each other (the decision API forwards nothing)")
	case !cfg.Gateway.Decide && cfg.Gateway.GRPCListen != "":
		return errors.New("gateway.grpc_listen serves the decision API: it needs decide")
	case !cfg.Gateway.Decide:
		var err error
		up, err = url.Parse(cfg.Gateway.Upstream)
		if err != nil || up.Scheme == "" || up.Host == "" {
			return fmt.Errorf("gateway.upstream: %q is not an absolute URL", cfg.Gateway.Upstream)
		}
	}
	tok, src, err := gatewayCredential(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: authHeader{tok, http.DefaultTransport}}
	bases, err := AuthorityURLs(cfg.Gateway.Authority)
	if err != nil {
		return err
	}
	base := bases[0]
	checkGatewayCredential(ctx, hc, base, src, log)

	ks, err := gateway.NewRemoteKeysFailover(bases, 2*time.Second, hc)
	if err != nil {
		return err
	}
	if err := ks.Refresh(ctx); err != nil {
		return fmt.Errorf("failed to fetch the authority's keys: %w", err)
	}
	led := remote.NewFailover(bases, hc, time.Now)
	led.MaxStale = cfg.Gateway.MaxStale
	go ks.Run(ctx, func(err error) { log.Warn("key refresh failed", "err", err) })
	go led.Run(ctx)
	var ready []readiness
	ready = append(ready,
		readiness{"keys", func() error {
			if since := time.Since(ks.LastSync()); since > keysStaleAfter {
				return fmt.Errorf("keys last fetched %s ago", since.Round(time.Millisecond))
			}
			return nil
		}},
		readiness{"ledger", func() error {
			if !led.Synced() {
				return errors.New("not following any authority's ledger stream (unseen tokens are looked up, or refused)")
			}
			return nil
		}})

	bus := event.NewBus()
	var pub gateway.Publisher = bus
	unconfirmed := func() uint64 { return 0 }
	if cfg.Scale.NATS == "" {
		// No bus between processes: the events go to the authority's
		// POST /v1/events, which feeds its detection, forensics and audit.
		fw := &gateway.Forwarder{URL: base, Others: bases[1:], Client: hc, OnError: func(err error) { log.Warn("access events not forwarded yet", "err", err) }}
		sub := bus.Subscribe(1<<16, false)
		fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { fw.Run(fctx, sub.C); close(done) }()
		defer func() {
			// After the last request: hand over what is pending, give the
			// forwarder ten seconds to deliver it, and report any loss.
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sub.Drain(dctx)
			select {
			case <-done:
			case <-dctx.Done():
			}
			stop()
			<-done
			if d, r := sub.Dropped(), fw.Rejected(); d+r > 0 {
				log.Error("access events lost", "dropped_while_authority_unreachable", d, "rejected_by_authority", r)
			}
			log.Info("access events forwarded", "events", fw.Sent())
		}()
	} else {
		b, err := openBus(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer b.Close()
		ready = append(ready, readiness{"bus", b.Ping})
		durable := &durableRefusals{async: bus, bus: b, log: log}
		pub = durable
		unconfirmed = durable.unconfirmed.Load
		sink := b.Sink(ctx)
		sub := bus.Subscribe(1<<14, true)
		go func() {
			for batch := range sub.C {
				for _, ev := range batch {
					sink.Publish(ev)
				}
			}
		}()
		defer sub.Close()
		go b.ConsumeKeys(ctx, func(k keys.Key) error { ks.Apply(ctx, k); return nil })
	}
	g, err := gateway.New(GatewayConfig(cfg), ks, led, pub, time.Now)
	if err != nil {
		return err
	}
	defer g.Close()
	holds, err := gateway.NewRemoteHolds(bases, hc, g)
	if err != nil {
		return err
	}
	holds.OnError = func(err error) { log.Warn("containment feed interrupted", "err", err) }
	go holds.Run(ctx)
	ready = append(ready, readiness{"containment", func() error {
		if !holds.Fresh() {
			return errors.New("not following any authority's containment stream")
		}
		return nil
	}})
	closeReplay, err := sharedReplay(ctx, cfg, g)
	if err != nil {
		return err
	}
	if closeReplay != nil {
		defer closeReplay()
	}
	tp, err := NewTracerProvider(ctx, cfg, "custos-gateway")
	if err != nil {
		return err
	}
	if tp != nil {
		g.SetTracerProvider(tp)
		defer tp.Shutdown(context.WithoutCancel(ctx))
	}
	for _, w := range g.Warnings() {
		log.Warn("WARNING: " + w)
	}
	if cfg.Gateway.AdminListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(g.Collectors()...)
		reg.MustRegister(staleCollectors(led)...)
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_gateway_refusal_events_unconfirmed_total",
			Help: "Refusals answered before the bus confirmed their access event was stored (it was then queued for asynchronous publication)."},
			func() float64 { return float64(unconfirmed()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_gateway_unknown_kid_fetches_total",
			Help: "Key set fetches set off by tokens under a kid the gateway did not know (one per 250 ms on average, bursts of 4)."},
			func() float64 { return float64(ks.MissFetches()) }))
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		stop, err := serveAdmin(ctx, cfg.Gateway.AdminListen, reg, ready, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := net.Listen("tcp", cfg.Gateway.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", cfg.Gateway.Listen, err)
	}
	var h http.Handler
	if up != nil {
		h = gateway.NewProxy(up, g)
	} else {
		h = g.DecisionHandler()
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var gs *grpc.Server
	if cfg.Gateway.GRPCListen != "" {
		gln, err := net.Listen("tcp", cfg.Gateway.GRPCListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("failed to listen on %s: %w", cfg.Gateway.GRPCListen, err)
		}
		gs = grpc.NewServer()
		extauthz.New(g).Register(gs)
		go gs.Serve(gln)
		log.Info("custos gateway: Envoy ext_authz over gRPC", "grpc_listen", gln.Addr().String())
	}
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		if gs != nil {
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-sctx.Done():
				gs.Stop()
			}
		}
		srv.Shutdown(sctx)
	}()
	if up != nil {
		log.Info("custos gateway serving", "listen", "http://"+ln.Addr().String(), "upstream", up.String(), "authority", strings.Join(bases, ","), "admin", cfg.Gateway.AdminListen)
	} else {
		log.Info("custos gateway serving the decision API", "listen", "http://"+ln.Addr().String(),
			"forward_auth", gateway.DecidePath, "ext_authz", gateway.ExtAuthzPrefix+"/<path>", "authority", strings.Join(bases, ","), "admin", cfg.Gateway.AdminListen)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-shut // the last requests have had their answers, and their events
	return nil
}

// refusalStoreTimeout bounds how long a refusal waits for the bus to store
// its access event; past it, or at once while the bus is disconnected, the
// event is queued for asynchronous publication (retried until the bus is
// back) and the refusal answered all the same: it is a refusal either way.
const refusalStoreTimeout = time.Second

// durableRefusals is a scale-out gateway's publisher. A refusal's event is
// stored in JetStream (publish, then the server's acknowledgement) before
// Publish returns, and so before the refusal is answered: a gateway killed
// just after refusing (a decoy hit, a forged token) has lost no event that
// detection needs, as long as the bus was reachable. Allowed requests'
// events go through async (the in-process bus, then batched asynchronous
// publication): they are complete only once the upstream has answered.
type durableRefusals struct {
	async       gateway.Publisher
	bus         *natsbus.Bus
	log         *slog.Logger
	unconfirmed atomic.Uint64
}

func (p *durableRefusals) Publish(ev event.Access) {
	if ev.Verdict != event.Deny {
		p.async.Publish(ev)
		return
	}
	err := p.bus.Ping()
	if err == nil { // with the bus gone there is no one to wait for
		ctx, cancel := context.WithTimeout(context.Background(), refusalStoreTimeout)
		err = p.bus.PublishSync(ctx, ev)
		cancel()
	}
	if err != nil {
		if p.unconfirmed.Add(1) == 1 {
			p.log.Warn("a refusal's access event was not confirmed by the bus in time; queued (custos_gateway_refusal_events_unconfirmed_total counts them)", "err", err)
		}
		p.async.Publish(ev) // same request id: stored once if the first try was
	}
}

// staleCollectors are the metrics of a standalone gateway's bounded staleness.
func staleCollectors(led *remote.Client) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_gateway_stale_seconds",
			Help: "Seconds since the authority's issuance stream was last heard, while it is not fresh (0 while it is)."},
			func() float64 { return led.Staleness().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_gateway_stale_decisions_total",
			Help: "Tokens served from the local index while no authority answered, within gateway.max_stale."},
			func() float64 { return float64(led.StaleServed()) }),
	}
}

// keysStaleAfter: a standalone gateway whose key set has not been fetched
// for this long is not ready (it still refuses revoked keys it has heard of).
const keysStaleAfter = 10 * time.Second

// AuthorityURLs parses gateway.authority: one URL or a comma-separated list
// of the authority replicas' URLs, each absolute http(s) without a query.
func AuthorityURLs(list string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("gateway.authority: %q is not an absolute http(s) URL", part)
		}
		out = append(out, strings.TrimSuffix(u.String(), "/"))
	}
	if len(out) == 0 {
		return nil, errors.New("gateway.authority: no authority URL")
	}
	return out, nil
}

// readiness is one check of /readyz.
type readiness struct {
	name  string
	check func() error
}

// readyHandler answers 200 when every check passes and 503 otherwise, with
// each check's result by name.
func readyHandler(checks []readiness) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out := make(map[string]string, len(checks))
		status := http.StatusOK
		for _, c := range checks {
			if err := c.check(); err != nil {
				out[c.name], status = err.Error(), http.StatusServiceUnavailable
			} else {
				out[c.name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(out)
	}
}

// serveAdmin serves /healthz, /readyz and /metrics on addr until ctx ends
// or stop is called.
func serveAdmin(ctx context.Context, addr string, reg *prometheus.Registry, checks []readiness, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on the admin address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", readyHandler(checks))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener failed", "err", err)
		}
	}()
	log.Info("custos gateway admin endpoints", "listen", "http://"+ln.Addr().String())
	var once sync.Once
	stop = func() { once.Do(func() { srv.Close() }) }
	go func() { <-ctx.Done(); stop() }()
	return stop, nil
}

// sharedReplay gives g the replicas' shared DPoP replay cache in scale.redis,
// when set; it returns what closes it. With a sharded ledger the cache is
// on the first shard: every gateway must check a proof's jti in the one
// place, and the list's order is fixed (the shards' markers).
func sharedReplay(ctx context.Context, cfg config.Config, g *gateway.Gateway) (func() error, error) {
	urls := cfg.Scale.RedisURLs()
	if len(urls) == 0 {
		return nil, nil
	}
	r, err := dpopredis.Open(ctx, urls[0], "", nil)
	if err != nil {
		return nil, fmt.Errorf("dpop replay cache: %w", err)
	}
	g.SetReplay(r)
	return r.Close, nil
}
