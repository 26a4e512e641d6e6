package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
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

// RunGateway runs `custos gateway`: the verifying reverse proxy as its own
// process, following the authority's keys and issuance ledger over HTTP.
func RunGateway(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	up, err := url.Parse(cfg.Gateway.Upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		return fmt.Errorf("gateway.upstream: %q is not an absolute URL", cfg.Gateway.Upstream)
	}
	tf := cfg.Gateway.AuthorityTokenFile
	if tf == "" && cfg.Data != "" {
		tf = filepath.Join(cfg.Data, AdminTokenFile)
	}
	if tf == "" {
		return errors.New("gateway: a credential for the authority is needed (--token-file or --data)")
	}
	b, err := os.ReadFile(tf)
	if err != nil {
		return fmt.Errorf("failed to read the authority credential: %w", err)
	}
	hc := &http.Client{Transport: authHeader{strings.TrimSpace(string(b)), http.DefaultTransport}}
	base := strings.TrimSuffix(cfg.Gateway.Authority, "/")

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
	srv := &http.Server{Handler: gateway.NewProxy(up, g), ReadHeaderTimeout: 10 * time.Second}
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
	}()
	log.Info("custos gateway serving", "listen", "http://"+ln.Addr().String(), "upstream", up.String(), "authority", base)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-shut // the last requests have had their answers, and their events
	return nil
}
