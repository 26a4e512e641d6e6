package audit

import (
	"errors"
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

// Handler serves the log as C2SP tlog-tiles: /checkpoint, /tile/L/N and
// /tile/entries/N, with or without an /audit prefix (it is mounted at
// /audit/).
func (l *Log) Handler() http.Handler { return NewHandler(l.dir) }

// NewHandler serves the tlog-tiles resources of the log in dir, read-only.
func NewHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/audit")
		p = strings.TrimPrefix(p, "/")
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
		http.ServeContent(w, r, "", st.ModTime(), f)
	})
}
