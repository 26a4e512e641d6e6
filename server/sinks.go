package server

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/detect/sink"
)

// attachSinks connects the configured alert sinks to detection.
func (s *Server) attachSinks(e *detect.Engine) error {
	closers, err := openSinks(s.Config, s.Log, e)
	s.closers = append(s.closers, closers...)
	return err
}

// openSinks connects cfg's alert sinks to e and returns what closes them.
func openSinks(cfg config.Config, log *slog.Logger, e *detect.Engine) (closers []func() error, _ error) {
	d := cfg.Detect
	onErr := func(err error) { log.Error("alert sink failed", "err", err) }
	add := func(k sink.Sink, closer func() error) {
		sink.Attach(e, k, onErr)
		closers = append(closers, closer)
	}
	if d.Webhook != "" {
		secret := os.Getenv(d.WebhookSecretEnv)
		if secret == "" {
			return closers, fmt.Errorf("detect.webhook_secret_env: %s is not set", d.WebhookSecretEnv)
		}
		w, err := sink.NewWebhook(sink.WebhookConfig{URL: d.Webhook, Secret: []byte(secret), SpoolDir: filepath.Join(cfg.Data, "webhook-spool")})
		if err != nil {
			return closers, err
		}
		add(w, w.Close)
	}
	if d.Slack != "" {
		w, err := sink.NewWebhook(sink.WebhookConfig{URL: d.Slack, Slack: true, SpoolDir: filepath.Join(cfg.Data, "slack-spool")})
		if err != nil {
			return closers, err
		}
		add(w, w.Close)
	}
	if d.Syslog != "" {
		l, err := sink.NewSyslog("udp", d.Syslog, "custos")
		if err != nil {
			return closers, err
		}
		add(l, l.Close)
	}
	if d.AlertsFile != "" {
		f, err := sink.OpenFile(d.AlertsFile)
		if err != nil {
			return closers, err
		}
		add(f, f.Close)
	}
	return closers, nil
}
