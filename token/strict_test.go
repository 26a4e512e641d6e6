package token

import (
	"bytes"
	"testing"
)

// FuzzAppendSegment: AppendSegment accepts exactly what DecodeSegment
// accepts, decodes it the same, and keeps what dst held.
func FuzzAppendSegment(f *testing.F) {
	for _, s := range []string{"", "eyJhIjoxfQ", "eyJhIjoxfQ==", "eyJhIjoxfR", "ey\nJhIjoxfQ", "a", "ab", "abc", "_-", "+/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, werr := DecodeSegment(s)
		prefix := []byte("kept")
		dst := make([]byte, len(prefix), len(prefix)+len(s))
		copy(dst, prefix)
		got, gerr := AppendSegment(dst, []byte(s))
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: DecodeSegment %v, AppendSegment %v", s, werr, gerr)
		}
		if !bytes.HasPrefix(got, prefix) {
			t.Fatalf("%q: dst lost its prefix: %q", s, got)
		}
		if gerr != nil {
			if len(got) != len(prefix) {
				t.Fatalf("%q: failed but appended %q", s, got[len(prefix):])
			}
			return
		}
		if !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("%q: appended %q, DecodeSegment %q", s, got[len(prefix):], want)
		}
	})
}

func TestAppendSegmentNoAlloc(t *testing.T) {
	src := []byte("eyJhbGciOiJFZERTQSIsInR5cCI6ImRwb3Arand0In0")
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := AppendSegment(buf[:0], src); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations with room in dst", n)
	}
}
