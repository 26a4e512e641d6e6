package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/natsbus"
	"github.com/custos-dev/custos/store"
)

// openBus connects to the NATS bus of a scale-out deployment.
func openBus(ctx context.Context, cfg config.Config, log *slog.Logger) (*natsbus.Bus, error) {
	b, err := natsbus.Open(ctx, natsbus.Config{URL: cfg.Scale.NATS, Partitions: cfg.Scale.Partitions, Prefix: cfg.Scale.Prefix})
	if err != nil {
		return nil, err
	}
	b.OnError = func(err error) { log.Warn("event bus", "err", err) }
	return b, nil
}

// bridge publishes this process's access events, issuance and key changes
// to the bus, for the other roles.
func (s *Server) bridge(ctx context.Context, b *natsbus.Bus) {
	sink := b.Sink(ctx)
	sub := s.Bus.Subscribe(1<<14, true)
	go func() {
		for batch := range sub.C {
			for _, ev := range batch {
				sink.Publish(ev)
			}
		}
	}()
	// On the commit path: hand off without blocking. A record that does not
	// fit is only a missed push; gateways ask the ledger on a miss.
	issued := make(chan ledger.Record, 1<<14)
	stop := s.Ledger.Subscribe(func(r ledger.Record) {
		if r.Peer {
			return // another replica's record, heard from the bus
		}
		select {
		case issued <- r:
		default:
			s.Log.Warn("issuance stream behind; record not pushed", "hash", r.Hash.String())
		}
	})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case r := <-issued:
				if err := b.PublishIssuance(ctx, r); err != nil {
					s.Log.Warn("failed to publish issuance", "err", err)
				}
			}
		}
	}()
	s.keyChanges.subscribe(func(k keys.Key) {
		go func() {
			if err := b.PublishKey(ctx, k); err != nil {
				s.Log.Warn("failed to publish key change", "err", err)
			}
		}()
	})
	// Replicas share the store: a key change announced by another replica
	// is read back from it, so every replica signs and verifies alike.
	go b.ConsumeKeys(ctx, func(k keys.Key) error {
		if cur, ok := s.Keys.Lookup(k.KID); ok && cur.State == k.State {
			return nil
		}
		return s.Keys.Reload(ctx)
	})
	go func() { <-ctx.Done(); sub.Close(); stop() }()

	// Alerts raised by detector processes are in the store (the API reads
	// them there); their announcements feed this replica's live stream and
	// console.
	go b.FollowAlerts(ctx, func(raw json.RawMessage) error {
		var a detect.Alert
		if json.Unmarshal(raw, &a) == nil && a.ID != "" {
			s.Detect.Relay(a)
			if s.Console != nil {
				s.Console.Alert(a)
			}
		}
		return nil
	})

	// Replicas on a shared ledger apply each other's records (issuance and
	// revocations) and re-serve them on their gateway streams; until this
	// replica has caught up with the stream, live answers are confirmed with
	// the shared backend.
	if s.Config.Scale.Redis != "" {
		s.peers = b.FollowIssuance(ctx, 0, s.Ledger.Apply)
		s.Ledger.SetPeerFeed(s.peers.CaughtUp, func(ctx context.Context, r ledger.Record) error {
			ctx, cancel := context.WithTimeout(ctx, announceTimeout)
			defer cancel()
			return b.PublishIssuance(ctx, r)
		})
	}
}

// flushEvery writes e's changed alerts and incidents to its store every
// interval until ctx ends.
func flushEvery(ctx context.Context, e *detect.Engine, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_ = e.Flush(ctx)
		}
	}
}

// announceTimeout bounds how long a revocation waits for the bus to store
// its announcement before the caller is told to retry.
const announceTimeout = 2 * time.Second

// RunRole runs one role of a scale-out deployment: detector or forensics,
// each consuming access events from the bus, with health and readiness on
// cfg.Listen. (all, authority and gateway run through Open/Run and RunGateway.)
func RunRole(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	b, err := openBus(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	mux := http.NewServeMux()
	reg := NewRegistry()
	RegisterBus(reg, b)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	ready := func(extra map[string]func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			checks := map[string]string{"bus": "ok"}
			status := http.StatusOK
			if err := b.Ping(); err != nil {
				checks["bus"], status = err.Error(), http.StatusServiceUnavailable
			}
			for name, check := range extra {
				checks[name] = "ok"
				if err := check(); err != nil {
					checks[name], status = err.Error(), http.StatusServiceUnavailable
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(checks)
		}
	}
	var consume func(context.Context) error
	switch cfg.Role {
	case "detector":
		dcfg := detect.DefaultConfig()
		if len(cfg.Detect.AllowedCountries) > 0 {
			dcfg.ForeignOrigin.Allowed = cfg.Detect.AllowedCountries
		}
		// The authority's policies and limits: what a detector raises is
		// contained in the same proportion as what an authority raises.
		dcfg.Containment, dcfg.ContainmentLimits = containPolicies(cfg.Detect)
		e, err := detect.New(dcfg, time.Now)
		if err != nil {
			return err
		}
		if cfg.Detect.Rules != "" {
			if err := e.LoadRules(cfg.Detect.Rules); err != nil {
				return err
			}
		}
		registerDetection(reg, e)
		e.OnAlert(func(a detect.Alert) {
			if err := b.PublishAlert(ctx, a.ID, a); err != nil {
				log.Warn("failed to publish alert", "err", err)
			}
		})
		// Alerts and incidents go to the shared store, where every authority
		// reads them; an event is acknowledged once the alert it raised is
		// written (ProcessDurable), and instances raise one alert under one id.
		var db *store.DB
		if cfg.Scale.Store != "" {
			if db, err = store.OpenPostgres(ctx, cfg.Scale.Store); err != nil {
				return err
			}
			defer func() { // what the last events changed, then close
				fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				e.Flush(fctx)
				cancel()
				db.Close()
			}()
			if err := e.SetStore(ctx, db); err != nil {
				return err
			}
			// A detector holds no key, ledger or audit log: its actions and
			// the alerts the audit log records are queued in the store for
			// one authority to carry out (detect/queue.go).
			if _, err := detect.NewWorkQueue(ctx, db, detect.ActionQueue); err != nil {
				return err
			}
			e.SetContainment(detect.QueuedContainment{DB: db})
			e.QueueAudit()
			go flushEvery(ctx, e, time.Second)
		}
		closers, err := openSinks(cfg, log, e, nil)
		defer func() {
			for _, c := range closers {
				c()
			}
		}()
		if err != nil {
			return err
		}
		mux.Handle("GET /v1/alerts", e.Handler())
		mux.Handle("GET /v1/alerts/stream", e.Handler())
		mux.Handle("GET /v1/incidents", e.Handler())
		mux.Handle("GET /v1/incidents/{id}", e.Handler())
		var storeReady func() error
		if db != nil {
			storeReady = func() error {
				pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				return db.PingContext(pctx)
			}
		}
		n := cfg.Scale.Instances
		if n == 0 {
			n = 1
		}
		parts := b.Partitions(cfg.Scale.Instance, n)
		// The windows live in memory: a restarted detector first replays
		// what it had acknowledged within the longest window, then
		// consumes the rest, so its counts stand where they stood and an
		// enumeration it was following alerts at the same event.
		var rebuilt atomic.Bool
		checks := map[string]func() error{"state": func() error {
			if !rebuilt.Load() {
				return errors.New("rebuilding from the access stream")
			}
			return nil
		}}
		if storeReady != nil {
			checks["store"] = storeReady
		}
		mux.HandleFunc("GET /readyz", ready(checks))
		consume = func(ctx context.Context) error {
			start := time.Now()
			since := start.Add(-e.StateWindow())
			var replayed int
			err := e.Replaying(func() (err error) {
				replayed, err = b.Replay(ctx, "detector", parts, since, func(ev event.Access) error { e.Process(ev); return nil })
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to rebuild detection state: %w", err)
			}
			if err := e.Flush(ctx); err != nil {
				log.Warn("rebuilt alerts not written yet", "err", err)
			}
			rebuilt.Store(true)
			log.Info("detection state rebuilt", "events", replayed, "since", since.UTC().Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
			return b.Consume(ctx, "detector", parts, func(ev event.Access) error { return e.ProcessDurable(ctx, ev) })
		}
	case "forensics":
		w, err := forensics.NewWriter(filepath.Join(cfg.Data, EventsDir), forensics.WriterOptions{})
		if err != nil {
			return err
		}
		defer w.Close()
		reg.MustRegister(&forensicsCollector{w: w})
		mux.HandleFunc("GET /readyz", ready(nil))
		consume = func(ctx context.Context) error {
			return b.Consume(ctx, "forensics", b.Partitions(0, 1), w.Write)
		}
	default:
		return fmt.Errorf("role %q does not run through RunRole", cfg.Role)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- consume(ctx) }()
	log.Info("custos "+cfg.Role+" serving", "listen", "http://"+ln.Addr().String(), "bus", cfg.Scale.NATS)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-errc
}
