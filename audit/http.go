package audit

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/transparency-dev/tessera/api/layout"
)

// servable matches the C2SP tlog-tiles resource paths and nothing else, so
// the handler never exposes the rest of the log directory.
var servable = regexp.MustCompile(`^(checkpoint|tile/(entries|[0-9]{1,2})/(x[0-9]{3}/)*[0-9]{3}(\.p/[0-9]{1,3})?)$`)

// VerifierPath is where, beside checkpoint and tile/, the log serves its
// checkpoints' note verifier key (one line, text/plain), so a witness or an
// auditor needs no copy of the data directory: GET /audit/verifier.
const VerifierPath = "verifier"

// Handler serves the log as C2SP tlog-tiles: /checkpoint, /tile/L/N and
// /tile/entries/N, and its verifier key at /verifier, with or without an
// /audit prefix (it is mounted at /audit/). The shared log is read from its
// database, a local one from its directory.
func (l *Log) Handler() http.Handler {
	if l.appender == nil {
		return NewHandler(l.dir)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := resourcePath(w, r)
		if !ok {
			return
		}
		if p == VerifierPath {
			serveVerifier(w, l.vkey)
			return
		}
		b, err := readTiles(r.Context(), l.reader, p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
				return
			}
			http.Error(w, "failed to read log resource", http.StatusServiceUnavailable)
			return
		}
		setResourceHeaders(w, p)
		w.Write(b)
	})
}

// resourcePath checks the method and returns the log resource path asked
// for (without the /audit prefix), answering the request itself if it is
// not one.
func resourcePath(w http.ResponseWriter, r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return "", false
	}
	p := strings.TrimPrefix(r.URL.Path, "/audit")
	p = strings.TrimPrefix(p, "/")
	if p != VerifierPath && !servable.MatchString(p) {
		http.NotFound(w, r)
		return "", false
	}
	return p, true
}

func serveVerifier(w http.ResponseWriter, vkey string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	io.WriteString(w, vkey+"\n")
}

func setResourceHeaders(w http.ResponseWriter, p string) {
	switch {
	case p == layout.CheckpointPath:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
	case strings.Contains(p, ".p/"):
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=60")
	default:
		// Full tiles never change (tlog-tiles).
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
}

// NewHandler serves the tlog-tiles resources of the log in dir, read-only,
// and its verifier key (dir/vkey).
func NewHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := resourcePath(w, r)
		if !ok {
			return
		}
		if p == VerifierPath {
			b, err := os.ReadFile(filepath.Join(dir, vkeyFile))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			serveVerifier(w, strings.TrimSpace(string(b)))
			return
		}
		if !servable.MatchString(p) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
				return
			}
			http.Error(w, "failed to read log resource", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		setResourceHeaders(w, p)
		http.ServeContent(w, r, "", st.ModTime(), f)
	})
}
