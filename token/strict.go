package token

import (
	"bytes"
	"encoding/base64"
	"errors"
)

// Strict JOSE decoding for other verifiers in custos (DPoP proofs, provider
// tokens), so that every JWS custos reads is held to the same encoding rules
// as its own access tokens.

// DecodeSegment decodes one base64url part of a compact JWS and refuses any
// text that would not re-encode to itself (padding, non-zero trailing bits,
// line breaks).
func DecodeSegment(s string) ([]byte, error) { return decodePart(s) }

// AppendSegment is DecodeSegment that appends the decoded bytes to dst and
// reads a byte slice, so that a verifier can decode into a buffer it reuses
// without allocating. On error dst is returned unchanged.
func AppendSegment(dst, s []byte) ([]byte, error) {
	if bytes.IndexByte(s, '\r') >= 0 || bytes.IndexByte(s, '\n') >= 0 { // vectorised, unlike ContainsAny's byte loop

		return dst, errors.New("non-canonical base64url")
	}
	n := len(dst)
	out, err := strictB64.AppendDecode(dst, s)
	if err != nil {
		return dst, err
	}
	if base64.RawURLEncoding.EncodedLen(len(out)-n) != len(s) {
		return dst, errors.New("non-canonical base64url")
	}
	return out, nil
}

// CheckObject checks that b is exactly one JSON object, valid UTF-8, nested
// at most 32 deep, with no duplicate member names at any depth.
func CheckObject(b []byte) error { return strictObject(b, nil) }

// ScanObject is CheckObject that also calls member, when not nil, with the
// name (unescaped) and the raw value of every top-level member, in order,
// without decoding the object into a tree. An error from member stops the
// scan and is returned.
func ScanObject(b []byte, member func(name, value []byte) error) error {
	return strictObject(b, member)
}

// String decodes a raw JSON value (as ScanObject gives it) that must be a
// string.
func String(v []byte) (string, error) { return jsonString(v) }
