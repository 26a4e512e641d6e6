package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
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
	if kind == "" {
		return nil, fmt.Errorf("%w: empty kind", ErrBadEntry)
	}
	// Byte for byte what json.Marshal(Entry{...}) gives for a compact body,
	// without re-validating the body json.Marshal just produced.
	k, err := json.Marshal(kind)
	if err != nil {
		return nil, fmt.Errorf("failed to encode entry: %w", err)
	}
	b := make([]byte, 0, len(`{"v":1,"kind":,"time":"","body":}`)+len(k)+len(time.RFC3339Nano)+len(body))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"kind":`...)
	b = append(b, k...)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","body":`...)
	b = append(b, body...)
	b = append(b, '}')
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(b), MaxEntrySize)
	}
	return b, nil
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
