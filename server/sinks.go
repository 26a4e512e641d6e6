package server

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/detect/sink"
	"github.com/custos-dev/custos/event"
)

// attachSinks connects the configured alert sinks (and event sinks) to
// detection.
func (s *Server) attachSinks(e *detect.Engine) error {
	closers, err := openSinks(s.Config, s.Log, e, s.Bus)
	s.closers = append(s.closers, closers...)
	return err
}

// openSinks connects cfg's alert sinks to e, and its access-event sinks to
// bus when there is one, and returns what closes them.
func openSinks(cfg config.Config, log *slog.Logger, e *detect.Engine, bus *event.Bus) (closers []func() error, _ error) {
	d := cfg.Detect
	onErr := func(err error) { log.Error("alert sink failed", "err", err) }
	add := func(k sink.Sink, closer func() error) {
		sink.Attach(e, k, onErr)
		closers = append(closers, closer)
	}
	events := func(k sink.EventSink) {
		if bus != nil {
			closers = append(closers, closeFunc(sink.AttachEvents(bus, k, onErr)))
		}
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
		l, err := sink.NewSyslog(cmp.Or(d.SyslogNetwork, "udp"), d.Syslog, "custos")
		if err != nil {
			return closers, err
		}
		if l.Format, err = sink.ParseFormat(d.SyslogFormat); err != nil {
			return closers, fmt.Errorf("detect.syslog_format: %w", err)
		}
		if d.SyslogCAFile != "" {
			pem, err := os.ReadFile(d.SyslogCAFile)
			if err != nil {
				return closers, fmt.Errorf("detect.syslog_ca_file: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return closers, fmt.Errorf("detect.syslog_ca_file: no PEM certificate in %s", d.SyslogCAFile)
			}
			l.TLS = &tls.Config{RootCAs: roots}
		}
		add(l, l.Close)
		if d.SyslogEvents {
			events(l)
		}
	}
	if d.AlertsFile != "" {
		f, err := sink.OpenFile(d.AlertsFile)
		if err != nil {
			return closers, err
		}
		format, err := sink.ParseFormat(d.AlertsFileFormat)
		if err != nil {
			return closers, fmt.Errorf("detect.alerts_file_format: %w", err)
		}
		f.OCSF = format == sink.OCSF
		add(f, f.Close)
	}
	if sp := d.Splunk; sp.URL != "" {
		format, err := sink.ParseFormat(sp.Format)
		if err != nil {
			return closers, fmt.Errorf("detect.splunk.format: %w", err)
		}
		token := os.Getenv(sp.TokenEnv)
		if token == "" {
			return closers, fmt.Errorf("detect.splunk.token_env: %s is not set", sp.TokenEnv)
		}
		h, err := sink.NewSplunk(sink.SplunkConfig{URL: sp.URL, Token: token, Index: sp.Index, Format: format, Acks: sp.Acks,
			Delivery: sink.Delivery{OnError: onErr}})
		if err != nil {
			return closers, fmt.Errorf("detect.splunk: %w", err)
		}
		add(h, h.Close)
		if sp.Events {
			events(h)
		}
	}
	if pd := d.PagerDuty; pd.RoutingKeyEnv != "" {
		key := os.Getenv(pd.RoutingKeyEnv)
		if key == "" {
			return closers, fmt.Errorf("detect.pagerduty.routing_key_env: %s is not set", pd.RoutingKeyEnv)
		}
		p, err := sink.NewPagerDuty(sink.PagerDutyConfig{URL: pd.URL, RoutingKey: key, MinSeverity: detect.Severity(pd.MinSeverity),
			Delivery: sink.Delivery{OnError: onErr}})
		if err != nil {
			return closers, fmt.Errorf("detect.pagerduty: %w", err)
		}
		add(p, p.Close)
	}
	return closers, nil
}

// closeFunc adapts a func() to a closer.
func closeFunc(f func()) func() error { return func() error { f(); return nil } }
