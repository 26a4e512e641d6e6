package dpop

import (
	"errors"
	"net/url"
	"strings"
)

// CanonicalURL is the form in which htu and the request URL are compared
// (RFC 9449 section 4.3): query and fragment dropped, then RFC 3986 syntax-
// and scheme-based normalisation: scheme and host lower-cased, the default
// port removed, an empty path made "/", percent-encodings upper-cased and
// those of unreserved characters decoded, dot segments removed. Only http
// and https URLs with a host and no userinfo are accepted.
func CanonicalURL(raw string) (string, error) {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	if isCanonical(raw) {
		return raw, nil
	}
	return canonicalSlow(raw)
}

// canonicalSlow is CanonicalURL through url.Parse, for raw without query or
// fragment.
func canonicalSlow(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("not an http or https URL")
	}
	if u.User != nil || u.Opaque != "" {
		return "", errors.New("userinfo or opaque URL")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return "", errors.New("no host")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	p, err := normalizePercent(u.EscapedPath())
	if err != nil {
		return "", err
	}
	p = removeDotSegments(p)
	if p == "" {
		p = "/"
	}
	return scheme + "://" + host + p, nil
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// normalizePercent upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 section 6.2.2.2).
func normalizePercent(p string) (string, error) {
	if !strings.Contains(p, "%") {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) {
			return "", errors.New("truncated percent-encoding")
		}
		hi, ok1 := unhex(p[i+1])
		lo, ok2 := unhex(p[i+2])
		if !ok1 || !ok2 {
			return "", errors.New("bad percent-encoding")
		}
		if c := hi<<4 | lo; unreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteString(strings.ToUpper(p[i+1 : i+3]))
		}
		i += 2
	}
	return b.String(), nil
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	var out []string // output segments, each starting with "/" (or the first without)
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			j := strings.IndexByte(in[1:], '/')
			if j < 0 {
				out = append(out, in)
				in = ""
			} else {
				out = append(out, in[:j+1])
				in = in[j+1:]
			}
		}
	}
	return strings.Join(out, "")
}

// isCanonical reports, without parsing, whether raw (query and fragment
// already cut) is in the form CanonicalURL gives: the common case of a URL
// that a client and a gateway both write plainly, for which url.Parse and
// the normalisation would cost a fair part of a signature verification.
// It is deliberately narrow (lower-case http or https, a host of
// [a-z0-9.-], a port without a leading zero that is not the default, a path
// of unreserved characters, sub-delims, ':', '@' and '/' without
// percent-encodings or dot segments); anything else takes the full path.
// FuzzCanonicalFast checks that both agree.
func isCanonical(raw string) bool {
	var rest string
	var defPort string
	switch {
	case strings.HasPrefix(raw, "https://"):
		rest, defPort = raw[len("https://"):], "443"
	case strings.HasPrefix(raw, "http://"):
		rest, defPort = raw[len("http://"):], "80"
	default:
		return false
	}
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return false // no host, or an empty path (canonically "/")
	}
	host, path := rest[:slash], rest[slash:]
	if h, port, ok := strings.Cut(host, ":"); ok {
		if port == "" || port == defPort || port[0] == '0' || len(port) > 5 {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
		host = h
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !unreserved(c) && !strings.ContainsRune("/!$&'()*+,;=:@", rune(c)) {
			return false
		}
		// A dot segment: "/." or "/.." followed by "/" or the end.
		if c == '/' && i+1 < len(path) && path[i+1] == '.' {
			j := i + 2
			if j < len(path) && path[j] == '.' {
				j++
			}
			if j == len(path) || path[j] == '/' {
				return false
			}
		}
	}
	return true
}
