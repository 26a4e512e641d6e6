package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/server"
)

// loadConfig applies, in increasing strength: defaults, the YAML file,
// CUSTOS_* variables, then the flags the user set.
func loadConfig(cmd *cobra.Command, path string, flags func(*config.Config)) (config.Config, error) {
	c, err := config.Load(path, lookupEnv)
	if err != nil {
		return c, &exitError{2, err}
	}
	flags(&c)
	if err := c.Validate(); err != nil {
		return c, &exitError{2, err}
	}
	return c, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// newServeCmd is custos serve: every part in one process, or one role.
func newServeCmd() *cobra.Command {
	var cfgPath, data, listen, issuer, upstream, role string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run every part of custos in one process on the embedded default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, cfgPath, func(c *config.Config) {
				if cmd.Flags().Changed("data") {
					c.Data = data
				}
				if cmd.Flags().Changed("listen") {
					c.Listen = listen
				}
				if cmd.Flags().Changed("issuer") {
					c.Issuer = issuer
				}
				if cmd.Flags().Changed("upstream") {
					c.Gateway.Upstream = upstream
				}
				if cmd.Flags().Changed("role") {
					c.Role = role
				}
			})
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			switch cfg.Role {
			case "gateway":
				if cfg.Gateway.Authority == "" {
					cfg.Gateway.Authority = cfg.Issuer
				}
				return server.RunGateway(ctx, cfg, newLogger())
			case "detector", "forensics":
				return server.RunRole(ctx, cfg, newLogger())
			}
			return serve(ctx, cfg, cmd)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&data, "data", "", "data directory (created on first start)")
	cmd.Flags().StringVar(&listen, "listen", config.DefaultListen, "API address")
	cmd.Flags().StringVar(&issuer, "issuer", "", "token issuer (iss) and public base URL (default http://LISTEN)")
	cmd.Flags().StringVar(&upstream, "upstream", "", "run the gateway in-process in front of this upstream URL")
	cmd.Flags().StringVar(&role, "role", "all", "parts to run: all, authority, gateway, detector or forensics (scale-out roles need scale.nats)")
	return cmd
}

func serve(ctx context.Context, cfg config.Config, cmd *cobra.Command) error {
	log := newLogger()
	warn, err := cfg.CheckIssuer()
	if err != nil {
		return &exitError{2, err}
	}
	if warn != "" {
		log.Warn("ISSUER MAY BREAK DISCOVERY: "+warn, "issuer", cfg.Issuer, "listen", cfg.Listen)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", cfg.Listen, err)
	}
	s, err := server.Open(ctx, cfg, log, nil)
	if err != nil {
		ln.Close()
		return err
	}
	defer s.Close()
	if s.FirstStart {
		fmt.Fprintf(cmd.ErrOrStderr(), "custos: first start: created %s (keyring %s, admin credential %s, mode 0600)\n",
			cfg.Data, filepath.Join(cfg.Data, server.KeyringFile), filepath.Join(cfg.Data, server.AdminTokenFile))
	}
	var gw net.Listener
	if cfg.Gateway.Upstream != "" {
		if gw, err = net.Listen("tcp", cfg.Gateway.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("failed to listen on %s: %w", cfg.Gateway.Listen, err)
		}
		log.Info("custos gateway serving", "listen", "http://"+gw.Addr().String(), "upstream", cfg.Gateway.Upstream)
	}
	log.Info("custos serving", "api", "http://"+ln.Addr().String(), "data", cfg.Data)
	return s.Run(ctx, ln, gw)
}

var lookupEnv = os.LookupEnv
