package ingest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/event"
)

// Text access logs: nginx's predefined "combined" format and Envoy's default
// format string. Both are fixed layouts of space-separated fields, some in
// brackets or quotes, so they are read by hand with a small scanner rather
// than a regular expression per line; a JSON line of the same --format is
// still read as JSON.

// fields splits a log line into its fields: a run of non-space bytes, or a
// "quoted" or [bracketed] field without its delimiters. A quoted field ends
// at a quote followed by a space or the end of the line (Envoy does not
// escape quotes inside values; nginx writes them as \x22).
func fields(line string, max int) ([]string, error) {
	var out []string
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		if len(out) == max {
			break // trailing fields (nginx main's $http_x_forwarded_for, ...) are ignored
		}
		switch line[i] {
		case '"':
			j := i + 1
			for {
				k := strings.IndexByte(line[j:], '"')
				if k < 0 {
					return nil, fmt.Errorf("%w: unterminated quote in field %d", ErrLine, len(out)+1)
				}
				j += k
				if j+1 == len(line) || line[j+1] == ' ' {
					break
				}
				j++
			}
			out = append(out, line[i+1:j])
			i = j + 1
		case '[':
			k := strings.IndexByte(line[i:], ']')
			if k < 0 {
				return nil, fmt.Errorf("%w: unterminated [ in field %d", ErrLine, len(out)+1)
			}
			out = append(out, line[i+1:i+k])
			i += k + 1
		default:
			k := strings.IndexByte(line[i:], ' ')
			if k < 0 {
				k = len(line) - i
			}
			out = append(out, line[i:i+k])
			i += k
		}
	}
	return out, nil
}

// unescapeNginx undoes nginx's default escaping of variables (\xHH).
func unescapeNginx(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// requestLine splits "METHOD PATH PROTOCOL".
func requestLine(s string) (method, path string) {
	f := strings.Fields(s)
	if len(f) >= 2 {
		return f[0], f[1]
	}
	return "", ""
}

func count(field, name string) (int64, error) {
	if field == "-" {
		return 0, nil
	}
	n, err := strconv.ParseInt(field, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s %q is not a count", ErrLine, name, field)
	}
	return n, nil
}

func statusCode(field string) (int, error) {
	n, err := strconv.Atoi(field)
	if err != nil || n < 0 || n > 999 {
		return 0, fmt.Errorf("%w: status %q", ErrLine, field)
	}
	return n, nil
}

// parseCombined reads nginx's combined format:
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
func parseCombined(line string) (event.Access, string, error) {
	var ev event.Access
	f, err := fields(line, 9)
	if err != nil {
		return ev, "", err
	}
	if len(f) < 9 {
		return ev, "", fmt.Errorf("%w: %d fields, combined has 9", ErrLine, len(f))
	}
	if ev.Time, err = time.Parse("02/Jan/2006:15:04:05 -0700", f[3]); err != nil {
		return ev, "", fmt.Errorf("%w: unreadable time %q", ErrLine, f[3])
	}
	ev.Gateway = FormatNginx
	ev.SrcIP = f[0]
	ev.Method, ev.Path = requestLine(unescapeNginx(f[4]))
	if ev.Status, err = statusCode(f[5]); err != nil {
		return ev, "", err
	}
	if ev.Bytes, err = count(f[6], "body_bytes_sent"); err != nil {
		return ev, "", err
	}
	ev.UserAgent = dash(unescapeNginx(f[8]))
	fill(&ev, nil, "")
	return ev, "", nil
}

// parseEnvoyText reads Envoy's default format string:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
//	%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//	%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//	"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
func parseEnvoyText(line string) (event.Access, string, error) {
	var ev event.Access
	f, err := fields(line, 13)
	if err != nil {
		return ev, "", err
	}
	if len(f) < 13 {
		return ev, "", fmt.Errorf("%w: %d fields, Envoy's default format has 13", ErrLine, len(f))
	}
	if ev.Time, err = time.Parse(time.RFC3339Nano, f[0]); err != nil {
		return ev, "", fmt.Errorf("%w: unreadable time %q", ErrLine, f[0])
	}
	ev.Gateway = FormatEnvoy
	ev.Method, ev.Path = requestLine(f[1])
	if ev.Status, err = statusCode(f[2]); err != nil {
		return ev, "", err
	}
	if ev.Bytes, err = count(f[5], "bytes_sent"); err != nil {
		return ev, "", err
	}
	ms, err := count(f[6], "duration")
	if err != nil {
		return ev, "", err
	}
	ev.LatencyUS = ms * 1000
	ev.SrcIP = firstIP(dash(f[8]))
	ev.UserAgent = dash(f[9])
	ev.RequestID = dash(f[10])
	fill(&ev, nil, "")
	return ev, "", nil
}
