package server

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/detect/sink"
)

// attachSinks connects the configured alert sinks to detection.
func (s *Server) attachSinks(e *detect.Engine) error {
	d := s.Config.Detect
	onErr := func(err error) { s.Log.Error("alert sink failed", "err", err) }
	add := func(k sink.Sink, closer func() error) {
		sink.Attach(e, k, onErr)
		s.closers = append(s.closers, closer)
	}
	if d.Webhook != "" {
		secret := os.Getenv(d.WebhookSecretEnv)
		if secret == "" {
			return fmt.Errorf("detect.webhook_secret_env: %s is not set", d.WebhookSecretEnv)
		}
		w, err := sink.NewWebhook(sink.WebhookConfig{URL: d.Webhook, Secret: []byte(secret), SpoolDir: filepath.Join(s.Config.Data, "webhook-spool")})
		if err != nil {
			return err
		}
		add(w, w.Close)
	}
	if d.Slack != "" {
		w, err := sink.NewWebhook(sink.WebhookConfig{URL: d.Slack, Slack: true, SpoolDir: filepath.Join(s.Config.Data, "slack-spool")})
		if err != nil {
			return err
		}
		add(w, w.Close)
	}
	if d.Syslog != "" {
		l, err := sink.NewSyslog("udp", d.Syslog, "custos")
		if err != nil {
			return err
		}
		add(l, l.Close)
	}
	if d.AlertsFile != "" {
		f, err := sink.OpenFile(d.AlertsFile)
		if err != nil {
			return err
		}
		add(f, f.Close)
	}
	return nil
}
