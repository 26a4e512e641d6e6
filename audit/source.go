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
	"strings"

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
	name := path(p)
	b, err := s.read(ctx, name)
	if errors.Is(err, fs.ErrNotExist) && p > 0 {
		name = path(0)
		b, err = s.read(ctx, name)
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
