package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect/ingest"
	"github.com/custos-dev/custos/dpop"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/wire"
)

// Handler is the API.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.metadata)
	(&authority.Handler{Auth: s.Authority, Creds: s.Creds, Log: s.Log, Nonces: s.tokenNonces,
		Proxies: s.apiProxies}).Register(mux)

	mux.HandleFunc("GET /v1/keys", s.admin(s.listKeys))
	mux.HandleFunc("POST /v1/keys/rotate", s.admin(s.rotateKey))
	mux.HandleFunc("POST /v1/keys/{kid}/revoke", s.admin(s.revokeKey))
	mux.HandleFunc("GET /v1/keys/revoked", s.revokedKeys)
	mux.HandleFunc("GET /v1/keys/hygiene", s.admin(s.keyHygiene))
	mux.HandleFunc("GET /v1/keys/{kid}/custodians", s.admin(s.listCustodians))
	mux.HandleFunc("POST /v1/keys/{kid}/custodians", s.admin(s.addCustodian))
	mux.HandleFunc("GET /v1/staff", s.admin(s.listStaff))
	mux.Handle("GET /v1/keys/stream", gateway.KeyStreamHandler(s.keyChanges.subscribe))
	mux.HandleFunc("GET /v1/clients", s.admin(s.listClients))
	mux.HandleFunc("POST /v1/clients", s.admin(s.addClient))
	mux.HandleFunc("POST /v1/scim/tokens", s.admin(s.addSCIMToken))
	mux.HandleFunc("GET /v1/credentials", s.admin(s.listCredentials))
	mux.HandleFunc("POST /v1/credentials", s.admin(s.addCredentialHandler))
	mux.HandleFunc("POST /v1/credentials/{id}/revoke", s.admin(s.revokeCredential))
	mux.HandleFunc("GET /v1/credentials/self", s.allow(rolesAny, s.credentialSelf))

	// Gateways in their own processes follow the ledger with a gateway credential.
	mux.Handle("GET /v1/ledger/stream", s.allow(rolesFollow, s.Ledger.StreamHandler().ServeHTTP))
	mux.Handle("POST /v1/ledger/lookup", s.allow(rolesFollow, s.Ledger.LookupHandler().ServeHTTP))
	mux.HandleFunc("GET /v1/containment", s.allow(rolesFollow, s.listHolds))
	mux.HandleFunc("POST /v1/containment", s.admin(s.addHoldByHand))
	mux.HandleFunc("DELETE /v1/containment/{id}", s.admin(s.releaseHoldByHand))

	// Identity providers the shop keeps record their tokens with an issuer credential.
	mux.HandleFunc("POST /v1/ledger/record", s.recordLedger)
	mux.HandleFunc("POST /v1/ledger/prv", s.newPRV)
	mux.HandleFunc("POST /v1/providers/{name}/hydra/token-hook", s.hydraTokenHook)
	mux.HandleFunc("POST /v1/providers/{name}/keycloak/event", s.keycloakEvent)
	mux.Handle("GET /v1/containment/stream", s.allow(rolesFollow, gateway.ContainmentStreamHandler(s.Holds, s.holdFeed.subscribe).ServeHTTP))

	mux.Handle("/scim/v2/", http.StripPrefix("/scim/v2", s.Staff.SCIMHandler()))

	dh := s.Detect.Handler()
	mux.Handle("GET /v1/alerts", s.allow(rolesAlerts, dh.ServeHTTP))
	mux.Handle("GET /v1/alerts/stream", s.allow(rolesAlerts, dh.ServeHTTP))
	mux.Handle("GET /v1/incidents", s.allow(rolesAlerts, dh.ServeHTTP))
	mux.Handle("GET /v1/incidents/{id}", s.allow(rolesAlerts, dh.ServeHTTP))
	mux.HandleFunc("POST /v1/incidents/{id}/scope", s.admin(s.scopeIncident))
	mux.Handle("POST /v1/events", s.allow(rolesFollow, ingest.Handler(s.Ledger, s.Bus.Publish).ServeHTTP))

	mux.Handle("/audit/", http.StripPrefix("/audit", s.Audit.Handler()))
	mux.HandleFunc("POST /v1/incidents/{id}/hold", s.admin(s.holdIncident))
	mux.HandleFunc("DELETE /v1/incidents/{id}/hold", s.admin(s.releaseIncident))

	s.mountConsole(mux)

	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /openapi.json", s.openAPI)
	return mux
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	b, err := s.Keys.JWKS()
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", "JWKS unavailable")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "max-age=5")
	w.Write(b)
}

// metadata serves the RFC 8414 document, also as OpenID discovery: it
// lists what works and nothing else. custos has no authorization endpoint
// and issues no ID tokens, so response_types_supported is empty and no
// ID-token member appears.
func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	iss := strings.TrimSuffix(s.Config.Issuer, "/")
	w.Header().Set("Cache-Control", "max-age=60")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                s.Config.Issuer,
		"jwks_uri":                              iss + "/.well-known/jwks.json",
		"token_endpoint":                        s.Authority.TokenEndpoint(),
		"introspection_endpoint":                iss + "/v1/tokens/introspect",
		"revocation_endpoint":                   iss + "/v1/tokens/revoke",
		"grant_types_supported":                 []string{authority.GrantClientCredentials, authority.GrantTokenExchange},
		"token_endpoint_auth_methods_supported": []string{authority.AuthSecretBasic, authority.AuthSecretPost, authority.AuthPrivateKey},
		"token_endpoint_auth_signing_alg_values_supported": authority.AssertionAlgs(),
		"introspection_endpoint_auth_methods_supported":    []string{authority.AuthSecretBasic},
		"revocation_endpoint_auth_methods_supported":       []string{authority.AuthSecretBasic},
		"response_types_supported":                         []string{},
		"dpop_signing_alg_values_supported":                dpop.Algs,
	})
}

// externalIssuers maps the configuration to the authority's.
func externalIssuers(c config.OAuth) []authority.ExternalIssuer {
	out := make([]authority.ExternalIssuer, 0, len(c.ExternalIssuers))
	for _, e := range c.ExternalIssuers {
		out = append(out, authority.ExternalIssuer{Issuer: e.Issuer, JWKSURL: e.JWKSURL, Audience: e.Audience,
			ClockSkew: e.ClockSkew, SubjectClaim: e.SubjectClaim, Algorithms: e.Algorithms})
	}
	return out
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := []readiness{
		{"store", func() error { return s.DB.PingContext(ctx) }},
		{"keys", func() error { _, _, err := s.Keys.Signer(ctx); return err }},
	}
	if p, ok := s.ledgerBackend.(interface{ Ping(context.Context) error }); ok {
		checks = append(checks, readiness{"ledger", func() error { return p.Ping(ctx) }})
	}
	if s.bus != nil {
		checks = append(checks, readiness{"bus", s.bus.Ping})
	}
	if s.peers != nil {
		checks = append(checks, readiness{"replicas", func() error {
			if !s.peers.CaughtUp() {
				return errors.New("not caught up with the other replicas' ledger records")
			}
			return nil
		}})
	}
	if p, ok := s.auditStore.(interface{ Ping(context.Context) error }); ok {
		checks = append(checks, readiness{"audit", func() error { return p.Ping(ctx) }})
	}
	readyHandler(checks)(w, r)
}

// Run serves the API on ln (and, when gw is not nil, the in-process gateway
// proxy on gw) and runs the background loops (key schedule, ledger sweep,
// offboarding sweep, detection, forensics, audit digests) until ctx ends.
func (s *Server) Run(ctx context.Context, ln, gw net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.quit = make(chan struct{})
	defer func() { cancel(); s.stopLoops() }()
	if err := s.startAudit(ctx); err != nil {
		return fmt.Errorf("failed to start the audit feeds: %w", err)
	}
	s.startLoops(ctx)
	if err := s.startDetectorWork(ctx); err != nil {
		return fmt.Errorf("failed to start carrying out detector work: %w", err)
	}
	s.followControl(ctx)
	errc := make(chan error, 2)
	serve := func(h http.Handler, l net.Listener) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			srv.Shutdown(sctx)
		}()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			cancel()
			return
		}
		errc <- nil
	}
	n := 1
	if gw != nil {
		h, err := s.GatewayHandler()
		if err != nil {
			return err
		}
		n++
		go serve(h, gw)
	}
	go serve(s.handler, ln)
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// GatewayHandler is the in-process gateway in front of the configured upstream.
func (s *Server) GatewayHandler() (http.Handler, error) {
	if s.Gateway == nil || s.Config.Gateway.Upstream == "" {
		return nil, errors.New("gateway.upstream is not configured")
	}
	up, err := url.Parse(s.Config.Gateway.Upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		return nil, fmt.Errorf("gateway.upstream: %q is not an absolute URL", s.Config.Gateway.Upstream)
	}
	return gateway.NewProxy(up, s.Gateway), nil
}

// keySync is how often a replica on a shared store compares key states with it.
const keySync = 500 * time.Millisecond

func (s *Server) startLoops(ctx context.Context) {
	every := func(d time.Duration, fn func(context.Context) error, what string) {
		s.loops.Add(1)
		go func() {
			defer s.loops.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					s.Log.Error(what+" failed", "err", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	every(10*time.Second, s.Keys.Tick, "key schedule")
	if s.Config.Scale.Store != "" {
		// Replicas share the store: what another replica changed is read
		// back within keySync even if its announcement on the bus is lost.
		every(keySync, s.Keys.Sync, "key sync")
	}
	every(time.Minute, func(ctx context.Context) error { _, err := s.Ledger.Sweep(ctx); return err }, "ledger sweep")
	every(time.Minute, s.Staff.Sweep, "offboarding sweep")
	every(time.Hour, s.retainEvents, "event retention")
	if s.Config.Detect.Rules != "" {
		s.goLoop(func() {
			s.Detect.WatchRules(ctx, s.Config.Detect.Rules, 2*time.Second, func(err error) {
				s.Log.Error("rules not reloaded; the running rules stay", "file", s.Config.Detect.Rules, "err", err)
			})
		})
	}
	// Seal event files that have waited long enough, so scopes and SQL run
	// from the command line see recent events on a quiet server too.
	every(15*time.Second, func(context.Context) error { return s.Forensics.Tick() }, "event store tick")

	det := s.Bus.Subscribe(1<<16, false)
	s.consume(det, func() { s.detectLoop(ctx, det.C) })
	fw := s.Bus.Subscribe(1<<14, true)
	s.consume(fw, func() {
		for batch := range fw.C {
			for _, ev := range batch {
				if err := s.Forensics.Write(ev); err != nil {
					s.Log.Error("forensics write failed", "err", err)
				}
			}
		}
	})
}

// goLoop runs fn as a background loop that Run waits for before it returns.
func (s *Server) goLoop(fn func()) {
	s.loops.Add(1)
	go func() { defer s.loops.Done(); fn() }()
}

// consume runs fn, which reads sub until it is closed, as a consumer that
// Run drains (every pending event handed over) and waits for at shutdown.
func (s *Server) consume(sub *event.Subscription, fn func()) {
	s.drains = append(s.drains, sub.Drain)
	s.consumers.Add(1)
	go func() { defer s.consumers.Done(); fn() }()
}

// stopLoops is Run's last step, once no request is served any more: the
// bus's consumers get every pending event and finish (detection raises and
// contains what they hold), then the loops that follow them (the alerts'
// audit anchoring) write what is left, and every background loop has ended.
func (s *Server) stopLoops() {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for _, d := range s.drains {
		d(ctx)
	}
	s.consumers.Wait()
	close(s.quit)
	s.loops.Wait()
}

// drainTimeout bounds how long shutdown waits for each consumer to take
// the events pending for it.
const drainTimeout = 10 * time.Second

// detectLoop feeds the bus's batches to detection and flushes its alerts and
// incidents to the store every second, and once more when the bus is drained.
func (s *Server) detectLoop(ctx context.Context, batches <-chan []event.Access) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer s.Detect.Flush(context.Background())
	ctx = context.WithoutCancel(ctx) // the loop ends when the bus is drained
	for {
		select {
		case b, ok := <-batches:
			if !ok {
				return
			}
			s.Detect.ProcessBatch(b)
			if len(b) > 0 {
				s.metrics.detectLag.Observe(s.now().Sub(b[len(b)-1].Time).Seconds())
			}
		case <-tick.C:
			_ = s.Detect.Flush(ctx)
		}
	}
}

// tokenEndpointNonces are the token endpoint's DPoP nonces as oauth says
// (nil when off): keyed by the secret in oauth.dpop_nonce_secret_env, which
// must then be set and hold at least 32 bytes of base64, else by a random
// secret of this process.
func tokenEndpointNonces(c config.OAuth) (*dpop.Nonces, error) {
	if !c.DPoPNonce {
		return nil, nil
	}
	secret := make([]byte, 32)
	if env := c.DPoPNonceSecretEnv; env != "" {
		var err error
		secret, err = base64.StdEncoding.DecodeString(os.Getenv(env))
		if err != nil || len(secret) < 32 {
			return nil, fmt.Errorf("%w: oauth.dpop_nonce_secret_env: $%s must hold at least 32 bytes in base64", config.ErrInvalid, env)
		}
	} else if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return dpop.NewNonces(secret, c.DPoPNoncePeriod), nil
}
