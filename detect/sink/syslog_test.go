package sink

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// rfc5424 is a message as a receiver parses it.
type rfc5424 struct {
	pri                      int
	ts                       time.Time
	host, app, procid, msgid string
	sd                       map[string]string // params of the custos@32473 element
	body                     string
}

var errFrame = errors.New("bad frame")

// readFrame reads one octet-counted frame (RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG,
// MSG-LEN = NONZERO-DIGIT 0*9DIGIT) as a strict receiver does.
func readFrame(r *bufio.Reader) (string, error) {
	var digits []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		if c == ' ' {
			break
		}
		if c < '0' || c > '9' || (len(digits) == 0 && c == '0') || len(digits) == 10 {
			return "", errFrame
		}
		digits = append(digits, c)
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil || n == 0 {
		return "", errFrame
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// parse5424 parses the header and the structured data of an RFC 5424 message.
func parse5424(m string) (rfc5424, error) {
	var out rfc5424
	if !strings.HasPrefix(m, "<") {
		return out, errFrame
	}
	end := strings.Index(m, ">")
	if end < 2 || end > 4 {
		return out, errFrame
	}
	pri, err := strconv.Atoi(m[1:end])
	if err != nil || pri > 191 {
		return out, errFrame
	}
	out.pri = pri
	rest := m[end+1:]
	f := strings.SplitN(rest, " ", 7)
	if len(f) != 7 || f[0] != "1" {
		return out, fmt.Errorf("version/fields: %w", errFrame)
	}
	if out.ts, err = time.Parse(time.RFC3339Nano, f[1]); err != nil {
		return out, err
	}
	out.host, out.app, out.procid, out.msgid = f[2], f[3], f[4], f[5]
	for _, v := range []string{out.host, out.app, out.procid, out.msgid} {
		if v == "" || len(v) > 255 {
			return out, errFrame
		}
	}
	sd := f[6]
	if !strings.HasPrefix(sd, "[custos@32473 ") {
		return out, fmt.Errorf("sd: %w", errFrame)
	}
	out.sd = map[string]string{}
	i := len("[custos@32473 ")
	for {
		eq := strings.IndexByte(sd[i:], '=')
		if eq < 0 || sd[i+eq+1] != '"' {
			return out, fmt.Errorf("sd param: %w", errFrame)
		}
		name := sd[i : i+eq]
		i += eq + 2
		var val strings.Builder
		for ; i < len(sd) && sd[i] != '"'; i++ {
			if sd[i] == '\\' && i+1 < len(sd) && strings.ContainsRune(`"\]`, rune(sd[i+1])) {
				i++
			} else if sd[i] == ']' {
				return out, fmt.Errorf("unescaped ]: %w", errFrame)
			}
			val.WriteByte(sd[i])
		}
		if i >= len(sd) {
			return out, errFrame
		}
		out.sd[name] = val.String()
		i++
		if sd[i] == ']' {
			i++
			break
		}
		if sd[i] != ' ' {
			return out, errFrame
		}
		i++
	}
	out.body = strings.TrimPrefix(sd[i:], " ")
	return out, nil
}

// tlsSyslog is an RFC 5425 receiver: TLS, octet-counted frames, RFC 5424
// messages; it hands each parsed message (or the parse error) to got.
func tlsSyslog(t *testing.T) (addr string, roots *x509.CertPool, got chan rfc5424, errs chan error) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS() // for its certificate for 127.0.0.1
	cert := srv.TLS.Certificates
	roots = x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got, errs = make(chan rfc5424, 100), make(chan error, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					m, err := readFrame(r)
					if err != nil {
						if err != io.EOF {
							errs <- err
						}
						return
					}
					p, err := parse5424(m)
					if err != nil {
						errs <- fmt.Errorf("%w in %q", err, m)
						return
					}
					got <- p
				}
			}()
		}
	}()
	return ln.Addr().String(), roots, got, errs
}

func recv(t *testing.T, got chan rfc5424, errs chan error) rfc5424 {
	t.Helper()
	select {
	case m := <-got:
		return m
	case err := <-errs:
		t.Fatalf("receiver: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("timeout")
	}
	return rfc5424{}
}

func TestSyslogTLS(t *testing.T) {
	addr, roots, got, errs := tlsSyslog(t)
	t.Run("ok/alert_native", func(t *testing.T) {
		s, _ := NewSyslog("tls", addr, "custos")
		s.TLS = &tls.Config{RootCAs: roots}
		defer s.Close()
		a := alert(0)
		a.Entity = `ip:"]\` // every character RFC 5424 makes a receiver unescape
		if err := s.Send(a); err != nil {
			t.Fatal(err)
		}
		m := recv(t, got, errs)
		if m.pri != 82 || m.app != "custos" || m.msgid != "alert" || m.procid != "-" || !m.ts.Equal(a.Raised) {
			t.Fatalf("header %+v", m)
		}
		if m.sd["entity"] != a.Entity || m.sd["rule"] != "not_issued" || m.sd["incident"] != "inc-1" {
			t.Fatalf("structured data %q", m.sd)
		}
		var back detect.Alert
		if err := json.Unmarshal([]byte(m.body), &back); err != nil || back.ID != a.ID || back.Entity != a.Entity {
			t.Fatalf("body %q: %v", m.body, err)
		}
	})
	t.Run("ok/ocsf_alert_and_event", func(t *testing.T) {
		s, _ := NewSyslog("tls", addr, "custos")
		s.TLS = &tls.Config{RootCAs: roots}
		s.Format = OCSF
		defer s.Close()
		if err := s.Send(alert(1)); err != nil {
			t.Fatal(err)
		}
		ev := event.Access{Time: time.Date(2025, 6, 24, 3, 0, 0, 0, time.UTC), RequestID: "r1", Method: "GET", Path: "/api/members/7/profile",
			Status: 401, Verdict: event.Deny, Reason: event.ReasonNotIssued, SrcIP: "203.0.113.9"}
		if err := s.SendEvent(ev); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct {
			msgid string
			pri   int
			class float64
		}{{"alert", 82, 2004}, {"access", 84, 4002}} {
			m := recv(t, got, errs)
			var o map[string]any
			if err := json.Unmarshal([]byte(m.body), &o); err != nil {
				t.Fatal(err)
			}
			if m.msgid != want.msgid || m.pri != want.pri || o["class_uid"] != want.class {
				t.Fatalf("%s: pri %d class %v", m.msgid, m.pri, o["class_uid"])
			}
		}
	})
	t.Run("fail/untrusted_certificate", func(t *testing.T) {
		s, _ := NewSyslog("tls", addr, "custos") // system roots: the test CA is not among them
		defer s.Close()
		err := s.Send(alert(2))
		var uerr x509.UnknownAuthorityError
		if !errors.As(err, &uerr) {
			t.Fatalf("sent to an unverified receiver: %v", err)
		}
	})
	t.Run("fail/below_tls12", func(t *testing.T) {
		s, _ := NewSyslog("tls", addr, "custos")
		s.TLS = &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}
		defer s.Close()
		if err := s.Send(alert(3)); err == nil {
			t.Fatal("TLS below 1.2 accepted")
		}
	})
}

func TestSyslogFramingFuzzedEntities(t *testing.T) {
	addr, roots, got, errs := tlsSyslog(t)
	s, _ := NewSyslog("tls", addr, "custos")
	s.TLS = &tls.Config{RootCAs: roots}
	defer s.Close()
	for i, ent := range []string{"ip:1 2", "subject:\n7", "kid:ü]]", `kid:\\"`, strings.Repeat("x", 5000)} {
		a := alert(i)
		a.Entity = ent
		if err := s.Send(a); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, got, errs); m.sd["entity"] != ent {
			t.Fatalf("entity %q came back %q", ent, m.sd["entity"])
		}
	}
}
