package server

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
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
		l, err := sink.NewSyslog(cmp.Or(d.SyslogNetwork, "udp"), d.Syslog, "custos")
		if err != nil {
			return err
		}
		if l.Format, err = sink.ParseFormat(d.SyslogFormat); err != nil {
			return fmt.Errorf("detect.syslog_format: %w", err)
		}
		if d.SyslogCAFile != "" {
			pem, err := os.ReadFile(d.SyslogCAFile)
			if err != nil {
				return fmt.Errorf("detect.syslog_ca_file: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("detect.syslog_ca_file: no PEM certificate in %s", d.SyslogCAFile)
			}
			l.TLS = &tls.Config{RootCAs: roots}
		}
		add(l, l.Close)
		if d.SyslogEvents {
			s.closers = append(s.closers, closeFunc(sink.AttachEvents(s.Bus, l, onErr)))
		}
	}
	if d.AlertsFile != "" {
		f, err := sink.OpenFile(d.AlertsFile)
		if err != nil {
			return err
		}
		format, err := sink.ParseFormat(d.AlertsFileFormat)
		if err != nil {
			return fmt.Errorf("detect.alerts_file_format: %w", err)
		}
		f.OCSF = format == sink.OCSF
		add(f, f.Close)
	}
	if sp := d.Splunk; sp.URL != "" {
		format, err := sink.ParseFormat(sp.Format)
		if err != nil {
			return fmt.Errorf("detect.splunk.format: %w", err)
		}
		token := os.Getenv(sp.TokenEnv)
		if token == "" {
			return fmt.Errorf("detect.splunk.token_env: %s is not set", sp.TokenEnv)
		}
		h, err := sink.NewSplunk(sink.SplunkConfig{URL: sp.URL, Token: token, Index: sp.Index, Format: format, Acks: sp.Acks,
			Delivery: sink.Delivery{OnError: onErr}})
		if err != nil {
			return fmt.Errorf("detect.splunk: %w", err)
		}
		add(h, h.Close)
		if sp.Events {
			s.closers = append(s.closers, closeFunc(sink.AttachEvents(s.Bus, h, onErr)))
		}
	}
	if pd := d.PagerDuty; pd.RoutingKeyEnv != "" {
		key := os.Getenv(pd.RoutingKeyEnv)
		if key == "" {
			return fmt.Errorf("detect.pagerduty.routing_key_env: %s is not set", pd.RoutingKeyEnv)
		}
		p, err := sink.NewPagerDuty(sink.PagerDutyConfig{URL: pd.URL, RoutingKey: key, MinSeverity: detect.Severity(pd.MinSeverity),
			Delivery: sink.Delivery{OnError: onErr}})
		if err != nil {
			return fmt.Errorf("detect.pagerduty: %w", err)
		}
		add(p, p.Close)
	}
	return nil
}

// closeFunc adapts a func() to a closer.
func closeFunc(f func()) func() error { return func() error { f(); return nil } }
