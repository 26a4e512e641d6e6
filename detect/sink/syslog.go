package sink

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/detect"
)

// Syslog sends RFC 5424 messages over UDP, or TCP with octet-counting
// framing (RFC 6587), facility security/authorization (10).
type Syslog struct {
	mu       sync.Mutex
	network  string
	addr     string
	conn     net.Conn
	hostname string
	app      string
}

// NewSyslog returns a syslog sink; network is "udp" or "tcp".
func NewSyslog(network, addr, app string) (*Syslog, error) {
	if network != "udp" && network != "tcp" {
		return nil, fmt.Errorf("syslog network must be udp or tcp, got %q", network)
	}
	h, _ := os.Hostname()
	if h == "" {
		h = "-"
	}
	if app == "" {
		app = "custos"
	}
	return &Syslog{network: network, addr: addr, hostname: h, app: app}, nil
}

const facilityAuthPriv = 10

var syslogSeverity = map[detect.Severity]int{detect.Critical: 2, detect.High: 3, detect.Medium: 4, detect.Low: 5, detect.Info: 6}

// Format returns the RFC 5424 message for a.
func (s *Syslog) Format(a detect.Alert) string {
	sev, ok := syslogSeverity[a.Severity]
	if !ok {
		sev = 4
	}
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`)
	body, _ := json.Marshal(a)
	return fmt.Sprintf(`<%d>1 %s %s %s - %s [custos@32473 id="%s" rule="%s" severity="%s" entity="%s" incident="%s" count="%d"] %s`,
		facilityAuthPriv*8+sev, a.Raised.UTC().Format(time.RFC3339Nano), s.hostname, s.app, "alert",
		esc.Replace(a.ID), esc.Replace(a.Rule), a.Severity, esc.Replace(a.Entity), esc.Replace(a.Incident), a.Count, body)
}

// Send writes a, reconnecting once if the connection has gone.
func (s *Syslog) Send(a detect.Alert) error {
	msg := s.Format(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for try := 0; try < 2; try++ {
		if s.conn == nil {
			if s.conn, err = net.DialTimeout(s.network, s.addr, 5*time.Second); err != nil {
				s.conn = nil
				continue
			}
		}
		out := msg
		if s.network == "tcp" {
			out = fmt.Sprintf("%d %s", len(msg), msg)
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
		return s.conn.Close()
	}
	return nil
}

var _ Sink = (*Syslog)(nil)
