package sink

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// Syslog sends RFC 5424 messages, facility security/authorization (10),
// over UDP (RFC 5426, one message a datagram), TCP or TLS (RFC 5425:
// octet-counting framing, "LEN SP MSG", TLS 1.2 or later).
//
// Written by hand: the standard library's log/syslog speaks RFC 3164 with
// no TLS and no structured data, and the maintained RFC 5424 writers add a
// dependency for what is one Sprintf and one framing rule here.
type Syslog struct {
	// TLS configures the "tls" network (nil: system roots, the server name
	// from the address).
	TLS *tls.Config
	// Format of the message body: custos JSON or OCSF.
	Format Format

	mu       sync.Mutex
	network  string
	addr     string
	conn     net.Conn
	hostname string
	app      string
}

// NewSyslog returns a syslog sink; network is "udp", "tcp" or "tls".
func NewSyslog(network, addr, app string) (*Syslog, error) {
	if network != "udp" && network != "tcp" && network != "tls" {
		return nil, fmt.Errorf("syslog network must be udp, tcp or tls, got %q", network)
	}
	h, _ := os.Hostname()
	if h == "" {
		h = "-"
	}
	if app == "" {
		app = "custos"
	}
	return &Syslog{network: network, addr: addr, hostname: h, app: app, Format: Native}, nil
}

const facilityAuthPriv = 10

var syslogSeverity = map[detect.Severity]int{detect.Critical: 2, detect.High: 3, detect.Medium: 4, detect.Low: 5, detect.Info: 6}

var sdEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)

// Message returns the RFC 5424 message for a.
func (s *Syslog) Message(a detect.Alert) string {
	sev, ok := syslogSeverity[a.Severity]
	if !ok {
		sev = 4
	}
	body, _ := s.Format.Encode(a)
	return fmt.Sprintf(`<%d>1 %s %s %s - %s [custos@32473 id="%s" rule="%s" severity="%s" entity="%s" incident="%s" count="%d"] %s`,
		facilityAuthPriv*8+sev, a.Raised.UTC().Format(time.RFC3339Nano), s.hostname, s.app, "alert",
		sdEscape.Replace(a.ID), sdEscape.Replace(a.Rule), a.Severity, sdEscape.Replace(a.Entity), sdEscape.Replace(a.Incident), a.Count, body)
}

// EventMessage returns the RFC 5424 message for an access event (MSGID
// "access"; a refusal at warning, an allowed request at informational).
func (s *Syslog) EventMessage(e event.Access) string {
	sev := 6
	if e.Verdict == event.Deny {
		sev = 4
	}
	body, _ := s.Format.Encode(e)
	return fmt.Sprintf(`<%d>1 %s %s %s - access [custos@32473 request_id="%s" verdict="%s" reason="%s" src_ip="%s"] %s`,
		facilityAuthPriv*8+sev, e.Time.UTC().Format(time.RFC3339Nano), s.hostname, s.app,
		sdEscape.Replace(e.RequestID), e.Verdict, e.Reason, sdEscape.Replace(e.SrcIP), body)
}

// Send writes a.
func (s *Syslog) Send(a detect.Alert) error { return s.write(s.Message(a)) }

// SendEvent writes e.
func (s *Syslog) SendEvent(e event.Access) error { return s.write(s.EventMessage(e)) }

func (s *Syslog) dial() (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if s.network != "tls" {
		return d.Dial(s.network, s.addr)
	}
	cfg := s.TLS
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(s.addr)
	}
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	return tls.DialWithDialer(d, "tcp", s.addr, cfg)
}

// write sends one message, reconnecting once if the connection has gone.
func (s *Syslog) write(msg string) error {
	out := msg
	if s.network != "udp" {
		out = fmt.Sprintf("%d %s", len(msg), msg) // octet counting (RFC 5425 4.3, RFC 6587 3.4.1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for try := 0; try < 2; try++ {
		if s.conn == nil {
			if s.conn, err = s.dial(); err != nil {
				s.conn = nil
				continue
			}
		}
		_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err = s.conn.Write([]byte(out)); err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
	}
	return fmt.Errorf("failed to send to syslog: %w", err)
}

// Close closes the connection.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

var (
	_ Sink      = (*Syslog)(nil)
	_ EventSink = (*Syslog)(nil)
)
