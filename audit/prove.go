package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/event"
)

// EntryProof proves that Entry is at Index in the log committed to by the
// signed Checkpoint.
type EntryProof struct {
	Index      uint64   `json:"index"`
	Entry      []byte   `json:"entry"`      // the entry bytes as stored
	Checkpoint []byte   `json:"checkpoint"` // signed note
	Proof      [][]byte `json:"proof"`      // RFC 6962 inclusion proof
}

// Check verifies the checkpoint signature and the inclusion proof.
func (p EntryProof) Check(v note.Verifier) error {
	cp, err := ParseCheckpoint(p.Checkpoint, v)
	if err != nil {
		return err
	}
	if p.Index >= cp.Size {
		return fmt.Errorf("%w: index %d, checkpoint size %d", ErrNotPublished, p.Index, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(p.Entry)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.Index, cp.Size, leaf, p.Proof, cp.Hash); err != nil {
		return fmt.Errorf("%w: inclusion proof for entry %d: %v", ErrTampered, p.Index, err)
	}
	return nil
}

// ProveEntry builds an inclusion proof for entry index against the log's
// current checkpoint, read from loc (a directory or http(s) base URL).
func ProveEntry(ctx context.Context, loc string, v note.Verifier, index uint64) (EntryProof, error) {
	src := newSource(loc)
	raw, err := src.read(ctx, layout.CheckpointPath)
	if err != nil {
		return EntryProof{}, fmt.Errorf("failed to read checkpoint: %w", err)
	}
	cp, err := ParseCheckpoint(raw, v)
	if err != nil {
		return EntryProof{}, err
	}
	if index >= cp.Size {
		return EntryProof{}, fmt.Errorf("%w: index %d, checkpoint size %d", ErrNotPublished, index, cp.Size)
	}
	entry, err := readEntry(ctx, src, index, cp.Size)
	if err != nil {
		return EntryProof{}, err
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, tileFetcher(src))
	if err != nil {
		return EntryProof{}, fmt.Errorf("failed to build inclusion proof: %w", err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return EntryProof{}, fmt.Errorf("failed to build inclusion proof: %w", err)
	}
	ep := EntryProof{Index: index, Entry: entry, Checkpoint: raw, Proof: p}
	if err := ep.Check(v); err != nil {
		return EntryProof{}, err
	}
	return ep, nil
}

// readEntry returns the bytes of entry i in a tree of size n.
func readEntry(ctx context.Context, src source, i, n uint64) ([]byte, error) {
	b := i / layout.EntryBundleWidth
	p := layout.PartialTileSize(0, b, n)
	raw, file, err := readPartialOrFull(ctx, src, func(p uint8) string { return layout.EntriesPath(b, p) }, p)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", file, err)
	}
	entries, err := parseBundle(raw, nil)
	k := i % layout.EntryBundleWidth
	if uint64(len(entries)) <= k {
		if err == nil {
			err = fmt.Errorf("%w: no entry %d", ErrBadBundle, k)
		}
		return nil, &TamperError{Index: i, File: file, Err: err}
	}
	return entries[k], nil
}

// Scan calls fn for each entry in [from, size of the checkpoint at loc), in
// order. It checks entry formats but not the tree: run Verify for that.
func Scan(ctx context.Context, loc string, v note.Verifier, from uint64, fn func(index uint64, e Entry) error) error {
	src := newSource(loc)
	raw, err := src.read(ctx, layout.CheckpointPath)
	if err != nil {
		return fmt.Errorf("failed to read checkpoint: %w", err)
	}
	cp, err := ParseCheckpoint(raw, v)
	if err != nil {
		return err
	}
	for ri := range layout.Range(from, cp.Size-min(from, cp.Size), cp.Size) {
		braw, file, err := readPartialOrFull(ctx, src, func(p uint8) string { return layout.EntriesPath(ri.Index, p) }, ri.Partial)
		if err != nil {
			return &TamperError{Index: ri.Index * layout.EntryBundleWidth, File: file, Err: err}
		}
		entries, err := parseBundle(braw, nil)
		if uint(len(entries)) < ri.First+ri.N {
			if err == nil {
				err = fmt.Errorf("%w: %d entries", ErrBadBundle, len(entries))
			}
			return &TamperError{Index: ri.Index*layout.EntryBundleWidth + uint64(len(entries)), File: file, Err: err}
		}
		for k := ri.First; k < ri.First+ri.N; k++ {
			idx := ri.Index*layout.EntryBundleWidth + uint64(k)
			e, err := ParseEntry(entries[k])
			if err != nil {
				return &TamperError{Index: idx, File: file, Err: err}
			}
			if err := fn(idx, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// AccessProof proves that one event is counted in a per-second digest whose
// entry is in the log.
type AccessProof struct {
	EventHash []byte     `json:"event_hash"` // SHA-256 of the event's canonical JSON
	LeafIndex uint64     `json:"leaf_index"` // position among the second's events
	Count     uint64     `json:"count"`
	Proof     [][]byte   `json:"proof"`  // inclusion of the event in the digest root
	Digest    EntryProof `json:"digest"` // the audit.digest entry in the log
}

// Check verifies the proof for ev: ev hashes to EventHash, which is in the
// digest's root, and the digest entry is in the signed log.
func (p AccessProof) Check(v note.Verifier, ev event.Access) error {
	h, err := EventHash(ev)
	if err != nil {
		return err
	}
	if !bytes.Equal(h[:], p.EventHash) {
		return fmt.Errorf("%w: event does not hash to the proven leaf", ErrNotFound)
	}
	e, err := ParseEntry(p.Digest.Entry)
	if err != nil {
		return err
	}
	if e.Kind != KindDigest {
		return fmt.Errorf("%w: entry %d is %q, not a digest", ErrBadEntry, p.Digest.Index, e.Kind)
	}
	var body DigestBody
	if err := json.Unmarshal(e.Body, &body); err != nil {
		return fmt.Errorf("%w: digest body: %v", ErrBadEntry, err)
	}
	root, err := hex.DecodeString(body.Root)
	if err != nil || len(root) != sha256.Size || body.Count != p.Count {
		return fmt.Errorf("%w: digest body does not match the proof", ErrBadEntry)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(h[:])
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.LeafIndex, p.Count, leaf, p.Proof, root); err != nil {
		return fmt.Errorf("%w: event not in digest root: %v", ErrTampered, err)
	}
	return p.Digest.Check(v)
}

// ProveAccess finds ev in the digest sidecar of the log in dir and proves it
// included: in its second's digest root, and that digest in the log.
func ProveAccess(ctx context.Context, dir string, v note.Verifier, ev event.Access) (AccessProof, error) {
	h, err := EventHash(ev)
	if err != nil {
		return AccessProof{}, err
	}
	f, err := os.Open(filepath.Join(dir, digestDir, sidecarLeaves))
	if err != nil {
		return AccessProof{}, fmt.Errorf("failed to open digest leaves: %w", err)
	}
	defer f.Close()
	type hit struct {
		off int64
		rec digestRecord
		pos int
	}
	var hits []hit
	if _, err := scanRecords(f, func(off int64, r digestRecord) bool {
		for i, l := range r.leaves {
			if l == h {
				hits = append(hits, hit{off, r, i})
				break
			}
		}
		return true
	}); err != nil && !errors.Is(err, errTornRecord) {
		return AccessProof{}, err
	}
	if len(hits) == 0 {
		return AccessProof{}, fmt.Errorf("%w: event %x in no digest", ErrNotFound, h)
	}
	index, err := readDigestIndex(filepath.Join(dir, digestDir, sidecarIndex))
	if err != nil {
		return AccessProof{}, err
	}
	for _, ht := range hits {
		li, ok := index[ht.off]
		if !ok {
			// The index is written after the entry; after a crash it may
			// lack the last records, so search the log itself.
			if li, ok, err = findDigestEntry(ctx, dir, v, ht.off); err != nil {
				return AccessProof{}, err
			}
			if !ok {
				continue // a record whose digest entry never made it
			}
		}
		ep, err := ProveEntry(ctx, dir, v, li)
		if err != nil {
			return AccessProof{}, err
		}
		leaves := make([]node, len(ht.rec.leaves))
		hasher := sha256.New()
		for i, l := range ht.rec.leaves {
			leaves[i] = hashLeaf(hasher, l[:])
		}
		ap := AccessProof{
			EventHash: h[:], LeafIndex: uint64(ht.pos), Count: uint64(len(leaves)),
			Proof: inclusionProof(leaves, ht.pos), Digest: ep,
		}
		if err := ap.Check(v, ev); err != nil {
			return AccessProof{}, fmt.Errorf("digest at offset %d: %w", ht.off, err)
		}
		return ap, nil
	}
	return AccessProof{}, fmt.Errorf("%w: event %x is in no digest entry of the log", ErrNotFound, h)
}

func readDigestIndex(path string) (map[int64]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to read digest index: %w", err)
	}
	m := make(map[int64]uint64, len(b)/16)
	for i := 0; i+16 <= len(b); i += 16 {
		m[int64(binary.BigEndian.Uint64(b[i:]))] = binary.BigEndian.Uint64(b[i+8:])
	}
	return m, nil
}

var errStop = errors.New("stop")

func findDigestEntry(ctx context.Context, dir string, v note.Verifier, off int64) (uint64, bool, error) {
	var found uint64
	ok := false
	err := Scan(ctx, dir, v, 0, func(i uint64, e Entry) error {
		if e.Kind != KindDigest {
			return nil
		}
		var b DigestBody
		if json.Unmarshal(e.Body, &b) == nil && b.SidecarOffset == off {
			found, ok = i, true
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	return found, ok, nil
}

// inclusionProof is the RFC 6962 audit path for leaf i among leaves.
func inclusionProof(leaves []node, i int) [][]byte {
	if len(leaves) <= 1 {
		return [][]byte{}
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	if i < k {
		r := rootOfLeaves(leaves[k:])
		return append(inclusionProof(leaves[:k], i), r[:])
	}
	l := rootOfLeaves(leaves[:k])
	return append(inclusionProof(leaves[k:], i-k), l[:])
}
