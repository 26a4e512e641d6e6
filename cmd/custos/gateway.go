package main

import (
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
)

func init() {
	var cfgPath, upstream, listen, adminListen, authorityURL, tokenFile, data string
	cmd := &cobra.Command{
		Use:   "gateway --upstream URL",
		Short: "Run the verifying gateway as its own process in front of a customer-data API",
		Long: `Run the verifying gateway as its own process in front of a customer-data API.

It follows the authority over HTTP (keys, issuance stream, ledger lookups on a
miss) with a gateway credential (custos credentials add NAME --role gateway),
taken from CUSTOS_GATEWAY_TOKEN, --token-file, or DATA/gateway-token; it falls
back to DATA/admin-token with a warning. With several --authority URLs it
fails over between the replicas. --admin-listen serves /healthz, /readyz and
/metrics apart from the proxied listener. Its access
events go to the authority's POST /v1/events in batches (or to NATS when
scale.nats is set), and to gateway.events_file when that is configured.`,
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
			if cfg.Gateway.Upstream == "" {
				return usageErr("--upstream is required")
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
	root.AddCommand(cmd)
}
