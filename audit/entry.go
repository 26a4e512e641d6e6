package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Version is the entry format version this package writes and reads.
const Version = 1

// MaxEntrySize is the largest encoded entry the log accepts (the tlog-tiles
// entry bundle limit).
const MaxEntrySize = 1<<16 - 1

// Entry kinds written by this package. Other packages choose their own kinds
// (for example "key.rotate", "client.add"); see FORMAT.md.
const (
	KindDigest      = "audit.digest"
	KindHoldPlaced  = "audit.hold.placed"
	KindHoldRelease = "audit.hold.released"
)

// Entry is one record in the log, as stored in the entry bundles.
// See FORMAT.md for the wire format.
type Entry struct {
	V    int             `json:"v"`
	Kind string          `json:"kind"`
	Time time.Time       `json:"time"`
	Body json.RawMessage `json:"body"`
}

// entryPrefix is how every encoded entry starts; a cheap first check before
// the JSON is decoded.
var entryPrefix = []byte(`{"v":`)

// marshalEntry encodes an entry of the current version. body must be
// compact JSON, as json.Marshal produces.
func marshalEntry(kind string, t time.Time, body []byte) ([]byte, error) {
	b, err := appendEntryHead(make([]byte, 0, len(`{"v":1,"kind":"","time":"","body":}`)+len(kind)+len(time.RFC3339Nano)+len(body)), kind, t)
	if err != nil {
		return nil, err
	}
	b = append(b, body...)
	b = append(b, '}')
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), MaxEntrySize)
	}
	return b, nil
}

// appendEntryHead appends an entry up to its body: byte for byte what
// json.Marshal(Entry{...}) gives before a compact body, without
// re-validating a body json.Marshal just produced.
func appendEntryHead(b []byte, kind string, t time.Time) ([]byte, error) {
	if kind == "" {
		return nil, fmt.Errorf("%w: empty kind", ErrBadEntry)
	}
	k, err := json.Marshal(kind)
	if err != nil {
		return nil, fmt.Errorf("failed to encode entry: %w", err)
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"kind":`...)
	b = append(b, k...)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","body":`...)
	return b, nil
}

// encodeEntries encodes one entry of kind at time t per body in vs, each as
// json.Marshal would, and returns them with their RFC 6962 leaf hashes. The
// head of the entries is built once; the bodies are encoded straight into
// one buffer, each entry after a 0x00 byte so that its leaf hash
// SHA-256(0x00 || entry) needs no copy.
func encodeEntries(kind string, t time.Time, vs []any) ([][]byte, []node, error) {
	head, err := appendEntryHead(nil, kind, t)
	if err != nil {
		return nil, nil, err
	}
	var w appendWriter
	enc := json.NewEncoder(&w)
	ends := make([]int, len(vs))
	for i, v := range vs {
		start := len(w.b)
		w.b = append(w.b, 0)
		w.b = append(w.b, head...)
		if err := enc.Encode(v); err != nil {
			return nil, nil, fmt.Errorf("failed to encode %s entry body: %w", kind, err)
		}
		w.b[len(w.b)-1] = '}' // in place of the encoder's newline
		if n := len(w.b) - start - 1; n > MaxEntrySize {
			return nil, nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, n, MaxEntrySize)
		}
		ends[i] = len(w.b)
		if i == 0 && len(vs) > 1 {
			// Most entries of one call are alike: size the buffer once.
			w.b = slices.Grow(w.b, len(w.b)*(len(vs)-1)+len(w.b)*len(vs)/8)
		}
	}
	data := make([][]byte, len(vs))
	leaves := make([]node, len(vs))
	start := 0
	for i, end := range ends {
		data[i] = w.b[start+1 : end : end]
		leaves[i] = sha256.Sum256(w.b[start:end])
		start = end
	}
	return data, leaves, nil
}

// appendWriter is an io.Writer that appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// ParseEntry decodes one entry. Unknown versions, unknown fields and missing
// fields are errors: a reader never guesses at an entry it does not know.
func ParseEntry(b []byte) (Entry, error) {
	var e Entry
	if !bytes.HasPrefix(b, entryPrefix) {
		return e, fmt.Errorf("%w: does not start with %s", ErrBadEntry, entryPrefix)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrBadEntry, err)
	}
	if d.More() {
		return Entry{}, fmt.Errorf("%w: trailing data", ErrBadEntry)
	}
	if e.V != Version {
		return Entry{}, fmt.Errorf("%w: %d", ErrUnknownVersion, e.V)
	}
	if e.Kind == "" || e.Time.IsZero() || len(e.Body) == 0 {
		return Entry{}, fmt.Errorf("%w: missing kind, time or body", ErrBadEntry)
	}
	return e, nil
}

// entryKind checks an entry's version and returns its kind with a prefix
// scan: the fast path for Verify, which hashes the entry bytes and needs no
// more of it. An entry written by marshalEntry starts exactly like this;
// anything else (another version, reordered or escaped members) goes
// through ParseEntry for the exact verdict.
// The kind returned aliases b.
func entryKind(b []byte) ([]byte, error) {
	const head = `{"v":1,"kind":"`
	if len(b) > len(head) && string(b[:len(head)]) == head && b[len(b)-1] == '}' {
		rest := b[len(head):]
		if end := bytes.IndexByte(rest, '"'); end > 0 && bytes.IndexByte(rest[:end], '\\') < 0 &&
			bytes.HasPrefix(rest[end:], []byte(`","time":"`)) {
			return rest[:end], nil
		}
	}
	e, err := ParseEntry(b)
	return []byte(e.Kind), err
}

// parseBundle splits a tlog-tiles entry bundle (big-endian uint16 length,
// then the entry) into its entries. It returns the entries it could read and,
// on malformed input, an error with the position of the first bad entry.
func parseBundle(raw []byte, out [][]byte) ([][]byte, error) {
	for i := 0; i < len(raw); {
		if i+2 > len(raw) {
			return out, fmt.Errorf("%w: dangling byte at offset %d", ErrBadBundle, i)
		}
		n := int(binary.BigEndian.Uint16(raw[i:]))
		if i+2+n > len(raw) {
			return out, fmt.Errorf("%w: entry at offset %d needs %d bytes, %d left", ErrBadBundle, i, n, len(raw)-i-2)
		}
		out = append(out, raw[i+2:i+2+n])
		i += 2 + n
	}
	return out, nil
}
