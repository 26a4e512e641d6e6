package audit

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

// Hold keeps audit data and forensic partitions from retention while an
// incident needs them.
type Hold struct {
	ID       string    `json:"id"`
	Reason   string    `json:"reason"`
	PlacedAt time.Time `json:"placed_at"`
}

// Hold places (or renews the reason of) an evidence hold. The hold is
// recorded in the log first; if that fails, the hold is not placed.
func (l *Log) Hold(ctx context.Context, id, reason string) error {
	if id == "" {
		return fmt.Errorf("%w: empty hold id", ErrBadEntry)
	}
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	holds, err := ReadHolds(l.dir)
	if err != nil {
		return err
	}
	h := Hold{ID: id, Reason: reason, PlacedAt: l.now().UTC()}
	if err := l.Append(ctx, KindHoldPlaced, h); err != nil {
		return err
	}
	holds = slices.DeleteFunc(holds, func(o Hold) bool { return o.ID == id })
	return writeHolds(l.dir, append(holds, h))
}

// Release lifts a hold, after recording that in the log.
func (l *Log) Release(ctx context.Context, id string) error {
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	holds, err := ReadHolds(l.dir)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(holds, func(o Hold) bool { return o.ID == id })
	if i < 0 {
		return fmt.Errorf("%w: hold %q", ErrNotFound, id)
	}
	if err := l.Append(ctx, KindHoldRelease, map[string]string{"id": id}); err != nil {
		return err
	}
	return writeHolds(l.dir, slices.Delete(holds, i, i+1))
}

// Holds lists the holds in place.
func (l *Log) Holds() ([]Hold, error) {
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	return ReadHolds(l.dir)
}

// ReadHolds lists the holds recorded in a log directory, for retention jobs
// that do not have the log open.
func ReadHolds(dir string) ([]Hold, error) {
	b, err := os.ReadFile(filepath.Join(dir, holdsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read holds: %w", err)
	}
	var holds []Hold
	if err := json.Unmarshal(b, &holds); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", holdsFile, err)
	}
	return holds, nil
}

func writeHolds(dir string, holds []Hold) error {
	if holds == nil {
		holds = []Hold{}
	}
	b, err := json.MarshalIndent(holds, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode holds: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, holdsFile), b); err != nil {
		return fmt.Errorf("failed to write holds: %w", err)
	}
	return nil
}

//go:embed FORMAT.md
var formatDoc []byte

//go:embed export_readme.md
var exportReadme []byte

// Export copies the log in dir as covered by its checkpoint into out: the
// checkpoint, exactly the tiles and entry bundles it commits to, the
// verifier key (vkey), holds, the digest sidecar, FORMAT.md and a README
// on checking it all with public tools. out must not exist yet.
func Export(ctx context.Context, dir, out string) error {
	vk, err := os.ReadFile(filepath.Join(dir, vkeyFile))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoVerifierKey, err)
	}
	v, err := note.NewVerifier(string(trimNL(vk)))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoVerifierKey, err)
	}
	cpRaw, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	if err != nil {
		return fmt.Errorf("failed to read checkpoint: %w", err)
	}
	cp, err := ParseCheckpoint(cpRaw, v)
	if err != nil {
		return err
	}
	if err := os.Mkdir(out, 0o755); err != nil {
		return fmt.Errorf("failed to create export directory: %w", err)
	}
	src := dirSource(dir)
	copyRes := func(path func(p uint8) string, p uint8) error {
		b, _, err := readPartialOrFull(ctx, src, path, p)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", path(p), err)
		}
		want := path(p)
		if p > 0 && len(b) > 0 {
			// A partial read from a full file: keep only what the
			// checkpoint covers.
			b = trimResource(b, want, p)
		}
		return writeExport(out, want, b)
	}
	for ri := range layout.Range(0, cp.Size, cp.Size) {
		if err := copyRes(func(p uint8) string { return layout.EntriesPath(ri.Index, p) }, ri.Partial); err != nil {
			return err
		}
	}
	for level := uint64(0); cp.Size>>(level*layout.TileHeight) > 0; level++ {
		width := cp.Size >> (level * layout.TileHeight)
		for idx := uint64(0); idx*layout.TileWidth < width; idx++ {
			p := layout.PartialTileSize(level, idx, cp.Size)
			if err := copyRes(func(p uint8) string { return layout.TilePath(level, idx, p) }, p); err != nil {
				return err
			}
		}
	}
	files := map[string][]byte{
		layout.CheckpointPath: cpRaw,
		vkeyFile:              vk,
		"FORMAT.md":           formatDoc,
		"README.md":           exportReadme,
	}
	for _, name := range []string{holdsFile, filepath.Join(digestDir, sidecarLeaves), filepath.Join(digestDir, sidecarIndex)} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", name, err)
		}
		files[name] = b
	}
	// The checkpoint history up to the exported one, for verify --since.
	hist, err := os.ReadDir(filepath.Join(dir, checkpointsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to read checkpoint history: %w", err)
	}
	for _, h := range hist {
		n, err := strconv.ParseUint(h.Name(), 10, 64)
		if err != nil || n > cp.Size {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, checkpointsDir, h.Name()))
		if err != nil {
			return fmt.Errorf("failed to read checkpoint history: %w", err)
		}
		files[checkpointsDir+"/"+h.Name()] = b
	}
	for name, b := range files {
		if err := writeExport(out, name, b); err != nil {
			return err
		}
	}
	// The copy must verify on its own.
	if _, err := Verify(ctx, out, v, nil); err != nil {
		return fmt.Errorf("exported copy does not verify: %w", err)
	}
	return nil
}

// trimResource cuts a full tile or bundle down to its first p elements.
func trimResource(b []byte, path string, p uint8) []byte {
	if len(path) >= len("tile/entries") && path[:len("tile/entries")] == "tile/entries" {
		entries, _ := parseBundle(b, nil)
		if len(entries) < int(p) {
			return b
		}
		var out []byte
		for _, e := range entries[:p] {
			out = append(out, byte(len(e)>>8), byte(len(e)))
			out = append(out, e...)
		}
		return out
	}
	if len(b) >= int(p)*32 {
		return b[:int(p)*32]
	}
	return b
}

func writeExport(out, name string, b []byte) error {
	p := filepath.Join(out, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("failed to export %s: %w", name, err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("failed to export %s: %w", name, err)
	}
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
