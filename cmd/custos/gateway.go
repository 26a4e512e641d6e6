package main

import (
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
)

// newGatewayCmd is custos gateway: the verifying gateway as its own process.
func newGatewayCmd() *cobra.Command {
	var cfgPath, upstream, listen, adminListen, authorityURL, tokenFile, data, grpcListen string
	var decide bool
	cmd := &cobra.Command{
		Use:   "gateway --upstream URL | --decide [--grpc-listen ADDR]",
		Short: "Run the verifying gateway as its own process in front of a customer-data API",
		Long: `Run the verifying gateway as its own process in front of a customer-data API.

It follows the authority over HTTP (keys, issuance stream, ledger lookups on a
miss) with a gateway credential (custos credentials add NAME --role gateway),
taken from CUSTOS_GATEWAY_TOKEN, --token-file, or DATA/gateway-token; it falls
back to DATA/admin-token with a warning. With several --authority URLs it
fails over between the replicas. --admin-listen serves /healthz, /readyz and
/metrics apart from the proxied listener. Its access
events go to the authority's POST /v1/events in batches (or to NATS when
scale.nats is set), and to gateway.events_file when that is configured.

With --decide it proxies nothing: the shop's own proxy asks it about each
request and forwards. It serves GET /v1/decide (nginx auth_request, Traefik
forwardAuth, Caddy forward_auth) and ANY /ext_authz/<path> (Envoy HTTP
ext_authz) on --listen, and Envoy's ext_authz gRPC service on --grpc-listen.
Allow is 200 with X-Custos-Subject, X-Custos-Jti and X-Custos-Kid for the
upstream; deny is 401 (403 for blocked_source) with X-Custos-Reason. See
examples/ for nginx, Envoy, Traefik and Caddy configurations.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(cfgPath, lookupEnv)
			if err != nil {
				return &exitError{2, err}
			}
			set := cmd.Flags().Changed
			if set("upstream") {
				cfg.Gateway.Upstream = upstream
			}
			if set("listen") {
				cfg.Gateway.Listen = listen
			}
			if set("admin-listen") {
				cfg.Gateway.AdminListen = adminListen
			}
			if set("authority") {
				cfg.Gateway.Authority = authorityURL
			}
			if set("token-file") {
				cfg.Gateway.AuthorityTokenFile = tokenFile
			}
			if set("data") {
				cfg.Data = data
			}
			if set("decide") {
				cfg.Gateway.Decide = decide
				if decide && !set("upstream") {
					cfg.Gateway.Upstream = "" // a config file shared with the proxy mode
				}
			}
			if set("grpc-listen") {
				cfg.Gateway.GRPCListen = grpcListen
			}
			switch {
			case cfg.Gateway.Decide && cfg.Gateway.Upstream != "":
				return usageErr("--decide and --upstream exclude each other")
			case !cfg.Gateway.Decide && cfg.Gateway.GRPCListen != "":
				return usageErr("--grpc-listen needs --decide")
			case !cfg.Gateway.Decide && cfg.Gateway.Upstream == "":
				return usageErr("--upstream (or --decide) is required")
			}
			if cfg.Gateway.Authority == "" {
				cfg.Gateway.Authority = cfg.Issuer
			}
			ctx, cancel := signalContext()
			defer cancel()
			return server.RunGateway(ctx, cfg, newLogger())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&upstream, "upstream", "", "URL of the customer-data API to protect")
	cmd.Flags().StringVar(&listen, "listen", config.DefaultGatewayListen, "gateway address")
	cmd.Flags().StringVar(&adminListen, "admin-listen", "", "address serving /healthz, /readyz and /metrics (never the proxied listener)")
	cmd.Flags().StringVar(&authorityURL, "authority", "", "URL of the custos authority, or URL1,URL2,... of its replicas to fail over between (default: the issuer)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the gateway credential (default DATA/gateway-token)")
	cmd.Flags().StringVar(&data, "data", "", "data directory of the authority, to find its credential")
	cmd.Flags().BoolVar(&decide, "decide", false, "serve the decision API (/v1/decide, /ext_authz/...) for the shop's own proxy instead of proxying")
	cmd.Flags().StringVar(&grpcListen, "grpc-listen", "", "with --decide: address of Envoy's ext_authz gRPC service")
	return cmd
}
