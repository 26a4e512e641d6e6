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
	"time"

	"google.golang.org/grpc"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/gateway/extauthz"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger/remote"
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
	base := strings.TrimSuffix(cfg.Gateway.Authority, "/")
	checkGatewayCredential(ctx, hc, base, src, log)

	ks, err := gateway.NewRemoteKeys(base, 2*time.Second, hc)
	if err != nil {
		return err
	}
	if err := ks.Refresh(ctx); err != nil {
		return fmt.Errorf("failed to fetch the authority's keys: %w", err)
	}
	led := remote.New(base, hc, time.Now)
	go ks.Run(ctx, func(err error) { log.Warn("key refresh failed", "err", err) })
	go led.Run(ctx)

	bus := event.NewBus()
	if cfg.Scale.NATS == "" {
		// No bus between processes: the events go to the authority's
		// POST /v1/events, which feeds its detection, forensics and audit.
		fw := &gateway.Forwarder{URL: base, Client: hc, OnError: func(err error) { log.Warn("access events not forwarded yet", "err", err) }}
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
	g, err := gateway.New(GatewayConfig(cfg), ks, led, bus, time.Now)
	if err != nil {
		return err
	}
	defer g.Close()
	for _, w := range g.Warnings() {
		log.Warn("WARNING: " + w)
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
		log.Info("custos gateway serving", "listen", "http://"+ln.Addr().String(), "upstream", up.String(), "authority", base)
	} else {
		log.Info("custos gateway serving the decision API", "listen", "http://"+ln.Addr().String(),
			"forward_auth", gateway.DecidePath, "ext_authz", gateway.ExtAuthzPrefix+"/<path>", "authority", base)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-shut // the last requests have had their answers, and their events
	return nil
}
