// Package ingest reads access logs (custos JSON lines; nginx JSON or its
// combined format; Envoy JSON or its default format) into access events, so
// a shop that cannot put custos inline still gets detection.
package ingest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/wire"
)

// Formats understood by Read.
const (
	FormatCustos = "custos"
	FormatNginx  = "nginx"
	FormatEnvoy  = "envoy"
)

// MaxLine bounds one input line; longer lines are counted as malformed.
const MaxLine = 1 << 20

// MaxBody bounds the body of POST /v1/events (64 MiB).
const MaxBody = 64 << 20

// maxErrors bounds the line errors a Stats keeps (all are counted).
const maxErrors = 100

var (
	// ErrFormat is returned for an unknown format name.
	ErrFormat = errors.New("unknown log format")
	// ErrLine is wrapped by every malformed-line error.
	ErrLine = errors.New("malformed line")
)

// Provenance checks a token seen in a foreign log against the issuance ledger.
type Provenance interface {
	Status(ctx context.Context, h ledger.Hash) (ledger.Status, error)
}

// JTIProvenance is the optional capability to check a token known only by its jti.
type JTIProvenance interface {
	StatusJTI(ctx context.Context, jti string) (ledger.Status, error)
}

// Options configure ReadWith.
type Options struct {
	Format     string
	Provenance Provenance // optional
	Gateway    string     // gateway name for foreign events; default the format
	// Gateway's own: the lines are the access events of a custos gateway
	// forwarding what it checked itself, and are not marked as reported by
	// a log. Every other line gets Reported = event.ReportedLog.
	GatewayOwn bool
}

// LineError is one malformed line.
type LineError struct {
	Line int    `json:"line"`
	Err  string `json:"error"`
}

// Stats is what a read saw.
type Stats struct {
	Lines     int         `json:"lines"`
	Events    int         `json:"events"`
	Malformed int         `json:"malformed"`
	Errors    []LineError `json:"errors,omitempty"` // the first 100
	Checked   int         `json:"provenance_checked"`
	NotIssued int         `json:"not_issued"`
}

// Read parses r as JSON lines of format and calls fn for each good line.
// Malformed lines are counted with their numbers and never stop the read.
func Read(r io.Reader, format string, fn func(event.Access)) (Stats, error) {
	return ReadWith(context.Background(), r, Options{Format: format}, fn)
}

// ReadWith is Read with a provenance check for foreign logs that carry a
// bearer token or a jti.
func ReadWith(ctx context.Context, r io.Reader, o Options, fn func(event.Access)) (Stats, error) {
	var st Stats
	if !validFormat(o.Format) {
		return st, fmt.Errorf("%w: %q (want custos, nginx or envoy)", ErrFormat, o.Format)
	}
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, tooLong, err := readLine(br)
		if len(line) > 0 || tooLong {
			st.Lines++
			if tooLong {
				st.bad(fmt.Errorf("%w: longer than %d bytes", ErrLine, MaxLine))
			} else if s := strings.TrimSpace(string(line)); s != "" {
				ev, tok, perr := ParseLine(o.Format, []byte(s))
				if perr != nil {
					st.bad(perr)
				} else {
					if o.Gateway != "" && ev.Gateway == "" {
						ev.Gateway = o.Gateway
					}
					if !o.GatewayOwn || o.Format != FormatCustos {
						ev.Reported = event.ReportedLog
					}
					st.check(ctx, o.Provenance, &ev, tok)
					st.Events++
					fn(ev)
				}
			}
		} else if err == nil {
			st.Lines++ // an empty line
		}
		if err == io.EOF {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("failed to read line %d: %w", st.Lines+1, err)
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// MaxLine is skipped to its end and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		frag, e := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > MaxLine+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if e == bufio.ErrBufferFull {
			continue
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		return line, tooLong, e
	}
}

func (st *Stats) bad(err error) {
	st.Malformed++
	if len(st.Errors) < maxErrors {
		st.Errors = append(st.Errors, LineError{Line: st.Lines, Err: err.Error()})
	}
}

func (st *Stats) check(ctx context.Context, p Provenance, ev *event.Access, tok string) {
	if p == nil || ev.Reason != "" {
		return
	}
	var s ledger.Status
	var err error
	switch {
	case tok != "":
		s, err = p.Status(ctx, ledger.HashToken(tok))
	case ev.Token.JTI != "":
		jp, ok := p.(JTIProvenance)
		if !ok {
			return
		}
		s, err = jp.StatusJTI(ctx, ev.Token.JTI)
	default:
		return
	}
	if err != nil {
		return // unknown is not proof of forgery; the gap is counted by Checked
	}
	st.Checked++
	switch s {
	case ledger.Unknown:
		ev.Reason = event.ReasonNotIssued
		st.NotIssued++
	case ledger.Revoked:
		ev.Reason = event.ReasonRevokedToken
	}
}

func validFormat(f string) bool { return f == FormatCustos || f == FormatNginx || f == FormatEnvoy }

// ParseLine parses one line of format. For foreign formats it also returns
// the bearer token found in the line, if any, for the provenance check; the
// token is never put into the event.
func ParseLine(format string, line []byte) (event.Access, string, error) {
	switch format {
	case FormatCustos:
		var ev event.Access
		if err := wire.Unmarshal(line, &ev); err != nil {
			return ev, "", fmt.Errorf("%w: %v", ErrLine, err)
		}
		if ev.Time.IsZero() {
			return ev, "", fmt.Errorf("%w: no time", ErrLine)
		}
		return ev, "", nil
	case FormatNginx, FormatEnvoy:
		if len(line) > 0 && line[0] != '{' {
			if format == FormatNginx {
				return parseCombined(string(line))
			}
			return parseEnvoyText(string(line))
		}
		if err := wire.CheckKeys(line); err != nil {
			return event.Access{}, "", fmt.Errorf("%w: %v", ErrLine, err)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return event.Access{}, "", fmt.Errorf("%w: %v", ErrLine, err)
		}
		if format == FormatNginx {
			return fromNginx(m)
		}
		return fromEnvoy(m)
	}
	return event.Access{}, "", fmt.Errorf("%w: %q", ErrFormat, format)
}

func str(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			if v != "" && v != "-" {
				return v
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

func num(m map[string]any, keys ...string) (float64, bool) {
	s := str(m, keys...)
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "02/Jan/2006:15:04:05 -0700", "2006-01-02T15:04:05.000Z0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && f < 1e11 { // epoch seconds (msec in nginx)
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%w: unreadable time %q", ErrLine, s)
}

func fromNginx(m map[string]any) (event.Access, string, error) {
	var ev event.Access
	ts := str(m, "time_iso8601", "time", "@timestamp", "timestamp", "time_local", "msec")
	t, err := parseTime(ts)
	if err != nil {
		return ev, "", err
	}
	ev.Time = t
	ev.Gateway = "nginx"
	ev.RequestID = str(m, "request_id", "x_request_id")
	ev.Method = str(m, "request_method", "method")
	ev.Path = str(m, "request_uri", "uri", "path")
	if req := str(m, "request"); req != "" && (ev.Method == "" || ev.Path == "") {
		if f := strings.Fields(req); len(f) >= 2 {
			ev.Method, ev.Path = f[0], f[1]
		}
	}
	ev.SrcIP = firstIP(str(m, "remote_addr", "client_ip", "http_x_forwarded_for"))
	ev.UserAgent = str(m, "http_user_agent", "user_agent")
	ev.Country = str(m, "geoip_country_code", "geoip2_country_code", "country")
	ev.Route = str(m, "route")
	ev.Subject = str(m, "subject")
	if s, ok := num(m, "status"); ok {
		ev.Status = int(s)
	} else {
		return ev, "", fmt.Errorf("%w: no status", ErrLine)
	}
	if b, ok := num(m, "body_bytes_sent", "bytes_sent"); ok {
		ev.Bytes = int64(b)
	}
	if d, ok := num(m, "request_time"); ok {
		ev.LatencyUS = int64(d * 1e6)
	}
	if a, ok := num(m, "asn", "geoip_asn"); ok && a >= 0 && a < 1<<32 {
		ev.ASN = uint32(a)
	}
	tok := bearer(str(m, "http_authorization", "authorization"))
	fill(&ev, m, tok)
	return ev, tok, nil
}

func fromEnvoy(m map[string]any) (event.Access, string, error) {
	var ev event.Access
	t, err := parseTime(str(m, "start_time", "timestamp", "time"))
	if err != nil {
		return ev, "", err
	}
	ev.Time = t
	ev.Gateway = "envoy"
	ev.RequestID = str(m, "request_id", "x-request-id", "x_request_id")
	ev.Method = str(m, "method", ":method")
	ev.Path = str(m, "x-envoy-original-path", "path", ":path")
	ev.Route = str(m, "route_name", "route")
	ip := str(m, "x_forwarded_for", "x-forwarded-for")
	if ip == "" {
		ip = str(m, "downstream_remote_address", "downstream_direct_remote_address")
		if h, _, err := net.SplitHostPort(ip); err == nil {
			ip = h
		}
	}
	ev.SrcIP = firstIP(ip)
	ev.UserAgent = str(m, "user_agent", "user-agent")
	ev.Country = str(m, "country", "x-country")
	ev.Subject = str(m, "subject")
	s, ok := num(m, "response_code", "status")
	if !ok {
		return ev, "", fmt.Errorf("%w: no response_code", ErrLine)
	}
	ev.Status = int(s)
	if b, ok := num(m, "bytes_sent"); ok {
		ev.Bytes = int64(b)
	}
	if d, ok := num(m, "duration"); ok {
		ev.LatencyUS = int64(d * 1e3)
	}
	tok := bearer(str(m, "authorization"))
	fill(&ev, m, tok)
	return ev, tok, nil
}

func firstIP(s string) string {
	s, _, _ = strings.Cut(s, ",")
	return strings.TrimSpace(s)
}

func bearer(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// fill sets the token fields from an explicit jti/kid/sub or from the
// token's own (unverified) header and claims, and a verdict from the status.
func fill(ev *event.Access, m map[string]any, tok string) {
	ev.Token.JTI = str(m, "jti", "token_jti")
	ev.Token.KID = str(m, "kid", "token_kid")
	ev.Token.Sub = str(m, "sub", "token_sub")
	if tok != "" {
		parts := strings.Split(tok, ".")
		if len(parts) == 3 {
			var h struct {
				KID string `json:"kid"`
			}
			var c struct {
				JTI string          `json:"jti"`
				Sub string          `json:"sub"`
				Aud json.RawMessage `json:"aud"`
				IAT float64         `json:"iat"`
				EXP float64         `json:"exp"`
			}
			if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil && json.Unmarshal(b, &h) == nil && ev.Token.KID == "" {
				ev.Token.KID = h.KID
			}
			if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil && json.Unmarshal(b, &c) == nil {
				if ev.Token.JTI == "" {
					ev.Token.JTI = c.JTI
				}
				if ev.Token.Sub == "" {
					ev.Token.Sub = c.Sub
				}
				var aud string
				if json.Unmarshal(c.Aud, &aud) == nil {
					ev.Token.Aud = aud
				}
				ev.Token.IAT, ev.Token.EXP = int64(c.IAT), int64(c.EXP)
			}
		}
	}
	ev.Verdict = event.Allow
	if ev.Status == http.StatusUnauthorized || ev.Status == http.StatusForbidden {
		ev.Verdict = event.Deny
	}
}

// SourceGateway is the value of POST /v1/events?source= with which a custos
// gateway forwards its own access events (format custos).
const SourceGateway = "gateway"

// Handler serves POST /v1/events: a body of JSON lines in the format named
// by ?format= (default custos). The whole body is read first: a body that
// cannot be read, or has no valid line, is refused with 400 and nothing goes
// to fn; otherwise every good line goes to fn and the answer counts events
// and malformed (rejected) lines, with the first line errors. Events are
// marked as reported by a log unless ?source=gateway says a custos gateway
// forwards its own. Authentication is the caller's to wrap.
func Handler(prov Provenance, fn func(event.Access)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			wire.WriteError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
			return
		}
		f := r.URL.Query().Get("format")
		if f == "" {
			f = FormatCustos
		}
		if !validFormat(f) {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", "unknown format")
			return
		}
		src := r.URL.Query().Get("source")
		if src != "" && (src != SourceGateway || f != FormatCustos) {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", "source=gateway is the only source, with format custos")
			return
		}
		var evs []event.Access
		st, err := ReadWith(r.Context(), http.MaxBytesReader(w, r.Body, MaxBody), Options{Format: f, Provenance: prov, GatewayOwn: src == SourceGateway}, func(ev event.Access) {
			evs = append(evs, ev)
		})
		if err == nil && st.Events == 0 {
			err = fmt.Errorf("no valid line among %d (%d malformed)", st.Lines, st.Malformed)
		}
		if err != nil {
			wire.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request", "error_description": err.Error(), "stats": st})
			return
		}
		for _, ev := range evs {
			fn(ev)
		}
		wire.WriteJSON(w, http.StatusOK, st)
	})
}
