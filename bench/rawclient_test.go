package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReadAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		status     int
		closeAfter bool
		rest       string // what must be left for the next answer
		bad        bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhelloNEXT", 200, false, "NEXT", false},
		{"chunked", "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\nNEXT", 201, false, "NEXT", false},
		{"close", "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 401, true, "", false},
		{"until close", "HTTP/1.0 200 OK\r\n\r\nbody", 200, true, "", false},
		{"no body", "HTTP/1.1 204 No Content\r\n\r\nNEXT", 204, false, "NEXT", false},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, false, "", true},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", 0, false, "", true},
		{"bad header", "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", 0, false, "", true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, false, "", true},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, false, "", true},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in))
			st, cl, err := readAnswer(br)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: status %d", st)
				}
				return
			}
			if err != nil || st != tc.status || cl != tc.closeAfter {
				t.Fatalf("got %d close=%v err=%v", st, cl, err)
			}
			if rest, _ := io.ReadAll(br); string(rest) != tc.rest {
				t.Fatalf("left %q, want %q", rest, tc.rest)
			}
		})
	}
}

func FuzzReadAnswer(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		readAnswer(bufio.NewReader(strings.NewReader(in))) // must not panic or hang
	})
}

// The lean client against a real net/http server: answers of both framings
// on one kept-alive connection, a non-2xx status as an error, and a server
// that closes the connection is dialled again.
func TestRawConnAgainstNetHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big": // over net/http's buffer: chunked
			io.WriteString(w, strings.Repeat("x", 10000))
		case "/deny":
			http.Error(w, "no", http.StatusUnauthorized)
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	rc, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	get := func(path string) []byte {
		return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	}
	for _, p := range []string{"/", "/big", "/", "/close", "/", "/big"} {
		if err := rc.do(get(p)); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if err := rc.do(get("/deny")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("401 answer: %v", err)
	}
	if err := rc.do(get("/")); err != nil {
		t.Fatalf("after an error answer: %v", err)
	}
	l, err := ClosedLoopRaw(context.Background(), addr, 4, 300*time.Millisecond, func(w, seq int, buf []byte) []byte {
		return append(buf, get("/big")...)
	})
	if err != nil || l.Requests == 0 || l.Errors != 0 {
		t.Fatalf("closed loop: %+v, %v", l, err)
	}
}
