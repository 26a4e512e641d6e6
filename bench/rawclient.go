package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// rawConn is one keep-alive HTTP/1.1 connection that writes requests already
// serialised by the caller and reads each answer with a minimal parser
// (status line, Content-Length or chunked body). It is the load generator's
// lean client, in the spirit of wrk: on a 2-core machine the generator and
// the server share the cores, and net/http's client costs about a third of
// what it drives (docs/BENCHMARKS.md), so a leaner client leaves more of
// the machine to what is measured. It is written here because no load
// generator library for Go does this, and the parser only ever reads answers
// from the benchmark's own loopback server.
type rawConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
}

func dialRaw(addr string) (*rawConn, error) {
	r := &rawConn{addr: addr}
	return r, r.redial()
}

func (r *rawConn) redial() error {
	if r.c != nil {
		r.c.Close()
	}
	c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		return err
	}
	r.c, r.br = c, bufio.NewReaderSize(c, 16<<10)
	return nil
}

func (r *rawConn) Close() error {
	if r.c == nil {
		return nil
	}
	return r.c.Close()
}

// do sends req and reads its answer; a non-2xx status is an error. After a
// broken connection the next call dials again.
func (r *rawConn) do(req []byte) error {
	if r.c == nil {
		if err := r.redial(); err != nil {
			return err
		}
	}
	_ = r.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.c.Write(req); err != nil {
		r.c.Close()
		r.c = nil
		return err
	}
	status, closeAfter, err := readAnswer(r.br)
	if err != nil || closeAfter {
		r.c.Close()
		r.c = nil
	}
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("status %d", status)
	}
	return nil
}

var (
	errBadAnswer = errors.New("bench: malformed HTTP answer")
	crlf         = []byte("\r\n")
)

// readAnswer reads one HTTP/1.1 response from br, discarding its body, and
// reports its status and whether the server will close the connection.
func readAnswer(br *bufio.Reader) (status int, closeAfter bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, errBadAnswer
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errBadAnswer
	}
	length, chunked := int64(-1), false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, errBadAnswer
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			length, err = strconv.ParseInt(string(value), 10, 64)
			if err != nil || length < 0 {
				return 0, false, errBadAnswer
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			closeAfter = asciiEqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		err = discardChunked(br)
	case length >= 0:
		_, err = br.Discard(int(length))
	case status == 204 || status == 304 || status/100 == 1:
	default: // body until close
		_, err = io.Copy(io.Discard, br)
		closeAfter = true
	}
	return status, closeAfter, err
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil || n < 0 {
			return errBadAnswer
		}
		if n == 0 {
			// Trailers, then the blank line.
			for {
				line, err = br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimSpace(line)) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n)); err != nil {
			return err
		}
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !bytes.Equal(line, crlf) && !bytes.Equal(line, crlf[1:]) {
			return errBadAnswer
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
