package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/ledger"
)

// Digest classes: one digest entry per class per second with events.
const (
	ClassAccess   = "access"   // requests the gateway allowed
	ClassRefusal  = "refusal"  // requests the gateway refused
	ClassIssuance = "issuance" // tokens the authority issued
)

// Sidecar files, under the log directory (see FORMAT.md).
const (
	digestDir     = "digests"
	sidecarLeaves = "leaves" // append-only per-second leaf records
	sidecarIndex  = "index"  // append-only (record offset, log index) pairs
)

const (
	recordMagic = "CDR1"
	maxClassLen = 64
	// maxRecordLeaves bounds one record when reading the sidecar.
	maxRecordLeaves = 1 << 26
)

// DigestBody is the body of an audit.digest entry: the count and RFC 6962
// root of one second's event hashes, and where the leaves are kept.
type DigestBody struct {
	Class         string `json:"class"`
	Second        int64  `json:"second"` // Unix time of the second the events arrived in
	Count         uint64 `json:"count"`
	Root          string `json:"root"`           // hex RFC 6962 root over the leaves
	SidecarOffset int64  `json:"sidecar_offset"` // offset of the leaf record in digests/leaves
}

// EventHash is the digest leaf of an access event: SHA-256 of its canonical
// JSON (encoding/json of event.Access with the time in UTC).
func EventHash(a event.Access) ([32]byte, error) {
	a.Time = a.Time.UTC()
	b, err := json.Marshal(a)
	if err != nil {
		return [32]byte{}, fmt.Errorf("failed to encode access event: %w", err)
	}
	return sha256.Sum256(b), nil
}

// IssuanceHash is the digest leaf of an issuance record, built the same way.
func IssuanceHash(e ledger.Entry) ([32]byte, error) {
	e.IssuedAt, e.ExpiresAt = e.IssuedAt.UTC(), e.ExpiresAt.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return [32]byte{}, fmt.Errorf("failed to encode issuance record: %w", err)
	}
	return sha256.Sum256(b), nil
}

type bucketKey struct {
	class  string
	second int64
}

// Digester collects events and, every second, appends one digest entry per
// class to the log, keeping the leaves in an append-only sidecar so any one
// event can later be proven included (ProveAccess).
type Digester struct {
	l   *Log
	now func() time.Time

	mu      sync.Mutex
	buckets map[bucketKey][]node

	fmu     sync.Mutex // serialises flushes and sidecar writes
	leaves  *os.File
	index   *os.File
	dropped uint64
}

// NewDigester opens (or creates) the sidecar files in the log directory. A
// torn record at the end of the leaf file (a crash while writing it, before
// its digest entry could be appended) is cut off.
func NewDigester(l *Log, now func() time.Time) (*Digester, error) {
	if now == nil {
		now = time.Now
	}
	dir := filepath.Join(l.dir, digestDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create digest directory: %w", err)
	}
	leaves, err := os.OpenFile(filepath.Join(dir, sidecarLeaves), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open digest leaves: %w", err)
	}
	good, err := scanRecords(leaves, func(int64, digestRecord) bool { return true })
	if err != nil && !errors.Is(err, errTornRecord) {
		leaves.Close()
		return nil, err
	}
	if err != nil {
		slog.Warn("audit: cutting torn record off digest leaves", "file", leaves.Name(), "offset", good)
		if err := leaves.Truncate(good); err != nil {
			leaves.Close()
			return nil, fmt.Errorf("failed to truncate torn digest record: %w", err)
		}
	}
	if _, err := leaves.Seek(good, io.SeekStart); err != nil {
		leaves.Close()
		return nil, fmt.Errorf("failed to seek digest leaves: %w", err)
	}
	index, err := os.OpenFile(filepath.Join(dir, sidecarIndex), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		leaves.Close()
		return nil, fmt.Errorf("failed to open digest index: %w", err)
	}
	return &Digester{l: l, now: now, buckets: map[bucketKey][]node{}, leaves: leaves, index: index}, nil
}

// Add records one access event: allowed requests in the access digest,
// refused ones in the refusal digest.
func (d *Digester) Add(a event.Access) {
	h, err := EventHash(a)
	if err != nil {
		d.mu.Lock()
		d.dropped++
		d.mu.Unlock()
		return
	}
	class := ClassAccess
	if a.Verdict != event.Allow {
		class = ClassRefusal
	}
	d.add(class, h)
}

// AddIssuance records one issued token in the issuance digest.
func (d *Digester) AddIssuance(e ledger.Entry) {
	h, err := IssuanceHash(e)
	if err != nil {
		d.mu.Lock()
		d.dropped++
		d.mu.Unlock()
		return
	}
	d.add(ClassIssuance, h)
}

func (d *Digester) add(class string, h node) {
	k := bucketKey{class, d.now().Unix()}
	d.mu.Lock()
	d.buckets[k] = append(d.buckets[k], h)
	d.mu.Unlock()
}

// Run flushes finished seconds every second until ctx ends, then flushes
// everything. A failed flush keeps its events and is retried.
func (d *Digester) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return d.Flush(fctx, true)
		case <-t.C:
			if err := d.Flush(ctx, false); err != nil {
				slog.Error("audit: digest flush failed", "err", err)
			}
		}
	}
}

// Flush appends a digest entry for every finished second (every second, if
// all). Events of a second whose entry could not be written stay queued.
func (d *Digester) Flush(ctx context.Context, all bool) error {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	cur := d.now().Unix()
	d.mu.Lock()
	var keys []bucketKey
	for k := range d.buckets {
		if all || k.second < cur {
			keys = append(keys, k)
		}
	}
	d.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].second != keys[j].second {
			return keys[i].second < keys[j].second
		}
		return keys[i].class < keys[j].class
	})
	if len(keys) == 0 {
		return nil
	}
	taken := make([][]node, len(keys))
	d.mu.Lock()
	for i, k := range keys {
		taken[i] = d.buckets[k]
	}
	d.mu.Unlock()
	if err := d.flushMany(ctx, keys, taken); err != nil {
		return err
	}
	d.mu.Lock()
	for i, k := range keys {
		// Events may have arrived for this second after we took the
		// leaves (a late Add); keep them for the next flush.
		if rest := d.buckets[k][len(taken[i]):]; len(rest) > 0 {
			d.buckets[k] = append([]node(nil), rest...)
		} else {
			delete(d.buckets, k)
		}
	}
	d.mu.Unlock()
	return nil
}

// flushMany writes one sidecar record per key, syncs them once, then
// appends all their digest entries to the log as one group.
func (d *Digester) flushMany(ctx context.Context, keys []bucketKey, leaves [][]node) error {
	off, err := d.leaves.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("failed to seek digest leaves: %w", err)
	}
	bodies := make([]any, len(keys))
	offs := make([]int64, len(keys))
	var buf []byte
	for i, k := range keys {
		rec := encodeRecord(digestRecord{class: k.class, second: k.second, leaves: leaves[i]})
		root := merkleRoot(leaves[i])
		offs[i] = off + int64(len(buf))
		bodies[i] = DigestBody{
			Class: k.class, Second: k.second, Count: uint64(len(leaves[i])),
			Root: hex.EncodeToString(root[:]), SidecarOffset: offs[i],
		}
		buf = append(buf, rec...)
	}
	if _, err := d.leaves.Write(buf); err != nil {
		return fmt.Errorf("failed to write digest leaves: %w", err)
	}
	if err := d.leaves.Sync(); err != nil {
		return fmt.Errorf("failed to sync digest leaves: %w", err)
	}
	idx, err := d.l.appendMany(ctx, KindDigest, bodies)
	if err != nil {
		return err
	}
	ir := make([]byte, 0, 16*len(idx))
	for i, li := range idx {
		ir = binary.BigEndian.AppendUint64(ir, uint64(offs[i]))
		ir = binary.BigEndian.AppendUint64(ir, li)
	}
	if _, err := d.index.Write(ir); err != nil {
		// The digests are in the log; the index only speeds up proofs.
		slog.Warn("audit: failed to write digest index", "err", err)
	}
	return nil
}

// Close flushes everything and closes the sidecar files.
func (d *Digester) Close(ctx context.Context) error {
	err := d.Flush(ctx, true)
	d.fmu.Lock()
	defer d.fmu.Unlock()
	return errors.Join(err, d.leaves.Close(), d.index.Close())
}

// digestRecord is one second's leaves for one class in the sidecar.
type digestRecord struct {
	class  string
	second int64
	leaves []node
}

// encodeRecord: magic | class length (1) | class | second (8) | count (4) |
// count × 32-byte leaves | CRC-32 (IEEE) of everything before it.
func encodeRecord(r digestRecord) []byte {
	b := make([]byte, 0, 4+1+len(r.class)+8+4+32*len(r.leaves)+4)
	b = append(b, recordMagic...)
	b = append(b, byte(len(r.class)))
	b = append(b, r.class...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.second))
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.leaves)))
	for _, l := range r.leaves {
		b = append(b, l[:]...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

var errTornRecord = errors.New("audit: torn digest record")

// readRecord reads one record; io.EOF at a clean end, errTornRecord for a
// record cut short, and a malformed-record error otherwise.
func readRecord(r *bufio.Reader) (digestRecord, int64, error) {
	var rec digestRecord
	head := make([]byte, 5)
	if _, err := io.ReadFull(r, head); err != nil {
		if err == io.EOF {
			return rec, 0, io.EOF
		}
		return rec, 0, errTornRecord
	}
	if string(head[:4]) != recordMagic {
		return rec, 0, fmt.Errorf("%w: bad record magic", ErrBadBundle)
	}
	cl := int(head[4])
	if cl == 0 || cl > maxClassLen {
		return rec, 0, fmt.Errorf("%w: bad class length %d", ErrBadBundle, cl)
	}
	mid := make([]byte, cl+12)
	if _, err := io.ReadFull(r, mid); err != nil {
		return rec, 0, errTornRecord
	}
	count := binary.BigEndian.Uint32(mid[cl+8:])
	if count == 0 || count > maxRecordLeaves {
		return rec, 0, fmt.Errorf("%w: bad leaf count %d", ErrBadBundle, count)
	}
	body := make([]byte, int(count)*32+4)
	if _, err := io.ReadFull(r, body); err != nil {
		return rec, 0, errTornRecord
	}
	crc := crc32.NewIEEE()
	crc.Write(head)
	crc.Write(mid)
	crc.Write(body[:len(body)-4])
	if crc.Sum32() != binary.BigEndian.Uint32(body[len(body)-4:]) {
		return rec, 0, errTornRecord
	}
	rec.class = string(mid[:cl])
	rec.second = int64(binary.BigEndian.Uint64(mid[cl:]))
	rec.leaves = make([]node, count)
	for i := range rec.leaves {
		copy(rec.leaves[i][:], body[i*32:])
	}
	return rec, int64(len(head) + len(mid) + len(body)), nil
}

// scanRecords calls fn for each record with its offset until fn returns
// false, and returns the offset after the last whole record.
func scanRecords(f io.ReadSeeker, fn func(off int64, r digestRecord) bool) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	var off int64
	for {
		rec, n, err := readRecord(br)
		if err == io.EOF {
			return off, nil
		}
		if err != nil {
			return off, fmt.Errorf("digest record at offset %d: %w", off, err)
		}
		if !fn(off, rec) {
			return off + n, nil
		}
		off += n
	}
}

// merkleRoot is the RFC 6962 root over event hashes (each hashed as a leaf).
func merkleRoot(events []node) node {
	h := sha256.New()
	leaves := make([]node, len(events))
	for i, e := range events {
		leaves[i] = hashLeaf(h, e[:])
	}
	return rootOfLeaves(leaves)
}

// rootOfLeaves is the RFC 6962 root of leaf hashes, via perfect subtrees.
func rootOfLeaves(leaves []node) node {
	if len(leaves) == 0 {
		return sha256.Sum256(nil)
	}
	var rng []node
	for rest := leaves; len(rest) > 0; {
		k := 1
		for k*2 <= len(rest) {
			k *= 2
		}
		rng = append(rng, subtreeRoot(rest[:k]))
		rest = rest[k:]
	}
	root := rng[len(rng)-1]
	for i := len(rng) - 2; i >= 0; i-- {
		root = hashChildren(rng[i], root)
	}
	return root
}
