package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"key.rotate","time":"2025-01-01T00:00:00Z","body":{"kid":"k1"}}`))
	f.Add([]byte(`{"v":2,"kind":"x","time":"2025-01-01T00:00:00Z","body":{}}`))
	f.Add([]byte(`{"v":1,"kind":"x","time":"2025-01-01T00:00:00Z","body":{},"extra":1}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		if err != nil {
			return
		}
		if e.V != Version || e.Kind == "" {
			t.Fatalf("accepted %q as %+v", b, e)
		}
		// What parses must re-encode to something that parses the same.
		re, err := marshalEntry(e.Kind, e.Time, e.Body)
		if err != nil {
			return
		}
		e2, err := ParseEntry(re)
		if err != nil || e2.Kind != e.Kind || !e2.Time.Equal(e.Time) {
			t.Fatalf("re-encoded entry %q: %v", re, err)
		}
	})
}

func FuzzParseBundle(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 'c', 0, 0})
	f.Add([]byte{0, 5, 'a'})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseBundle(b, nil)
		if err != nil {
			return
		}
		var re []byte
		for _, e := range entries {
			re = append(re, byte(len(e)>>8), byte(len(e)))
			re = append(re, e...)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("bundle %x re-encodes as %x", b, re)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	s, _ := NewNoteSigner(testOrigin, priv)
	v, _ := NewNoteVerifier(testOrigin, priv.Public().(ed25519.PublicKey))
	good, _ := note.Sign(&note.Note{Text: testOrigin + "\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, s)
	f.Add(good)
	f.Add([]byte(testOrigin + "\n10\nAAAA\n\n— x y\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := ParseCheckpoint(b, v)
		if err == nil && (cp.Origin != testOrigin || len(cp.Hash) != 32) {
			t.Fatalf("accepted %q as %+v", b, cp)
		}
	})
}

func FuzzHashTile(f *testing.F) {
	f.Add(make([]byte, 64), uint8(2))
	f.Add(make([]byte, 63), uint8(2))
	f.Fuzz(func(t *testing.T, raw []byte, n uint8) {
		// checkTile's size rule: exact multiple of 32 and the expected count.
		want := make([]node, n)
		src := memSource{"tile/0/000.p/" + itoa(int(n)): raw, "tile/0/000": raw}
		p := uint64(n)
		if n == 0 {
			p = 256
			want = make([]node, 256)
		}
		m, err := checkTile(t.Context(), src, 0, 0, p, want)
		if err == nil && len(raw) != len(want)*32 {
			t.Fatalf("tile of %d bytes accepted for %d hashes", len(raw), len(want))
		}
		if err == nil && m == nil && !bytes.Equal(raw, make([]byte, len(raw))) {
			t.Fatal("differing tile accepted")
		}
	})
}

func FuzzDigestRecord(f *testing.F) {
	f.Add(encodeRecord(digestRecord{class: "access", second: 5, leaves: []node{{1}, {2}}}))
	f.Add([]byte("CDR1\x06acc"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, n, err := readRecord(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if !bytes.Equal(encodeRecord(rec), b[:n]) {
			t.Fatal("record does not re-encode to its bytes")
		}
	})
}
