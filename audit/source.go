package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/transparency-dev/tessera/api/layout"
)

// maxResource bounds what is read for one tile, bundle or checkpoint
// (a full bundle of maximum-size entries).
const maxResource = layout.EntryBundleWidth * (MaxEntrySize + 2)

// source reads log resources by their tlog-tiles path ("checkpoint",
// "tile/0/000", ...). A missing resource is fs.ErrNotExist.
type source interface {
	read(ctx context.Context, path string) ([]byte, error)
}

// newSource reads from a directory, or over HTTP when loc is an http(s) URL
// (the base under which "checkpoint" and "tile/" are served).
func newSource(loc string) source {
	if strings.HasPrefix(loc, "mysql://") {
		return &mysqlSource{url: loc}
	}
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return httpSource{base: strings.TrimSuffix(loc, "/") + "/", c: http.DefaultClient}
	}
	return dirSource(loc)
}

type dirSource string

func (d dirSource) read(_ context.Context, p string) ([]byte, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(p)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxResource {
		return nil, fmt.Errorf("resource larger than %d bytes", maxResource)
	}
	// One read of the whole file in the common case.
	b := make([]byte, 0, st.Size()+1)
	return readLimitedInto(b, f)
}

// readInto reads the file at p into buf, grown as needed, with plain system
// calls: an os.File adds a poller registration attempt, a finalizer and a
// stat to every file, a large share of Verify's cost per small file.
func (d dirSource) readInto(_ context.Context, p string, buf []byte) ([]byte, error) {
	name := filepath.Join(string(d), filepath.FromSlash(p))
	fd, err := retryEINTR(func() (int, error) { return syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	b := buf[:0]
	for {
		if len(b) == cap(b) {
			if len(b) > maxResource {
				return nil, fmt.Errorf("%s: resource larger than %d bytes", p, maxResource)
			}
			b = slices.Grow(b, max(len(b), 64<<10))
		}
		n, err := retryEINTR(func() (int, error) { return syscall.Read(fd, b[len(b):cap(b)]) })
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	if len(b) > maxResource {
		return nil, fmt.Errorf("%s: resource larger than %d bytes", p, maxResource)
	}
	return b, nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// bufSource is a source that can read into a caller's buffer; Verify reuses
// one per worker instead of allocating per file.
type bufSource interface {
	readInto(ctx context.Context, path string, buf []byte) ([]byte, error)
}

// readBuf reads path from s into buf (grown as needed), so the caller owns
// what it gets and may change it; with a nil buf, it returns what s.read
// returns.
func readBuf(ctx context.Context, s source, path string, buf []byte) ([]byte, error) {
	if buf == nil {
		return s.read(ctx, path)
	}
	if bs, ok := s.(bufSource); ok {
		return bs.readInto(ctx, path, buf)
	}
	b, err := s.read(ctx, path)
	if err != nil {
		return nil, err
	}
	return append(buf[:0], b...), nil
}

type httpSource struct {
	base string
	c    *http.Client
}

func (h httpSource) read(ctx context.Context, p string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+p, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s", h.base+p, resp.Status)
	}
	return readLimited(resp.Body)
}

func readLimited(r io.Reader) ([]byte, error) { return readLimitedInto(nil, r) }

func readLimitedInto(b []byte, r io.Reader) ([]byte, error) {
	lr := io.LimitReader(r, maxResource+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if len(b) > maxResource {
		return nil, fmt.Errorf("resource larger than %d bytes", maxResource)
	}
	return b, nil
}

// readPartialOrFull reads the resource at path(p); a partial resource that
// is gone because the tree grew is read from the full one instead, and the
// returned path names the file actually read.
func readPartialOrFull(ctx context.Context, s source, path func(p uint8) string, p uint8) ([]byte, string, error) {
	return readPartialOrFullInto(ctx, s, path, p, nil)
}

// readPartialOrFullInto is readPartialOrFull reading into buf (see readBuf).
func readPartialOrFullInto(ctx context.Context, s source, path func(p uint8) string, p uint8, buf []byte) ([]byte, string, error) {
	name := path(p)
	b, err := readBuf(ctx, s, name, buf)
	if errors.Is(err, fs.ErrNotExist) && p > 0 {
		name = path(0)
		b, err = readBuf(ctx, s, name, buf)
	}
	return b, name, err
}

// tileFetcher adapts a source to the tessera client's tile fetcher.
func tileFetcher(s source) func(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return func(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
		b, _, err := readPartialOrFull(ctx, s, func(p uint8) string { return layout.TilePath(level, index, p) }, p)
		return b, err
	}
}
