package audit

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// fakeTiles answers every resource with a fixed, full-width body, so the
// fuzzer exercises path parsing and trimming.
type fakeTiles struct{}

func (fakeTiles) ReadCheckpoint(context.Context) ([]byte, error) { return []byte("cp\n"), nil }
func (fakeTiles) ReadTile(_ context.Context, level, index uint64, p uint8) ([]byte, error) {
	if level > 63 {
		return nil, os.ErrNotExist
	}
	return make([]byte, 256*32), nil
}
func (fakeTiles) ReadEntryBundle(_ context.Context, index uint64, p uint8) ([]byte, error) {
	var b []byte
	for i := 0; i < 256; i++ {
		b = append(b, 0, 1, byte(i))
	}
	return b, nil
}

// FuzzReadTiles feeds request paths of the shared log's handler: anything
// but a tlog-tiles path is "not found", and a partial path never returns
// more than its width.
func FuzzReadTiles(f *testing.F) {
	for _, s := range []string{"checkpoint", "tile/0/000", "tile/0/x001/234.p/17", "tile/entries/000.p/5",
		"tile/entries/x123/456", "tile/../checkpoint", "tile/0/000.p/0", "tile/0/000.p/256", "verifier", "", "tile/99/000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		b, err := readTiles(context.Background(), fakeTiles{}, p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%q: %v is not ErrNotExist", p, err)
			}
			return
		}
		if p != "checkpoint" && !servable.MatchString(p) {
			t.Fatalf("%q served", p)
		}
		if i := strings.Index(p, ".p/"); i >= 0 && strings.HasPrefix(p, "tile/") && !strings.HasPrefix(p, "tile/entries/") {
			w := 0
			for _, c := range p[i+3:] {
				w = w*10 + int(c-'0')
			}
			if len(b) != w*32 {
				t.Fatalf("%q: %d bytes for width %d", p, len(b), w)
			}
		}
	})
}
