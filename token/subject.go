package token

import (
	"errors"
	"fmt"
	"strings"
)

// MaxSubjectBytes bounds a subject (the member ID in "sub").
const MaxSubjectBytes = 256

// ErrSubject is wrapped by every refusal of [CheckSubject].
var ErrSubject = errors.New("subject outside the subject grammar")

// CheckSubject enforces the subject grammar: the member ID a token is issued
// for, and that a gateway route binds to a path segment, is 1 to
// [MaxSubjectBytes] bytes of
//
//	ALPHA / DIGIT / "-" / "_" / "." / "@" / "+" / ":"
//
// and is not "." and holds no "..". Digits, UUIDs, e-mail addresses and
// "tenant:id" forms fit; spaces, slashes, percent signs (a "10%2F21" that
// some router decodes to "10/21"), ";" path parameters, "?" and "#",
// control, bidirectional-override and every other non-ASCII character, and
// dot segments do not, so one subject cannot be read as another path by an
// upstream or as another name by a person.
func CheckSubject(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrSubject)
	case len(s) > MaxSubjectBytes:
		return fmt.Errorf("%w: longer than %d bytes", ErrSubject, MaxSubjectBytes)
	case s == "." || strings.Contains(s, ".."):
		return fmt.Errorf("%w: a dot segment", ErrSubject)
	}
	for i := 0; i < len(s); i++ {
		if !subjectByte(s[i]) {
			return fmt.Errorf("%w: byte 0x%02x at %d (want ASCII letters, digits and - _ . @ + :)", ErrSubject, s[i], i)
		}
	}
	return nil
}

func subjectByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '@', '+', ':':
		return true
	}
	return false
}
