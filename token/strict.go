package token

// Strict JOSE decoding for other verifiers in custos (DPoP proofs, provider
// tokens), so that every JWS custos reads is held to the same encoding rules
// as its own access tokens.

// DecodeSegment decodes one base64url part of a compact JWS and refuses any
// text that would not re-encode to itself (padding, non-zero trailing bits,
// line breaks).
func DecodeSegment(s string) ([]byte, error) { return decodePart(s) }

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
