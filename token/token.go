// Package token signs and verifies custos access tokens: JWTs in the RFC 9068
// profile (typ "at+jwt"), compact JWS with EdDSA, ES256 or RS256 (an option,
// never the default) and nothing else.
//
// The authority calls [Sign]; a verifier calls [Parse], which refuses anything
// that is not a strictly encoded token (size, base64url, JSON, duplicate keys,
// crit), then [VerifySignature] with the key the header's kid names. Parse
// never fetches or trusts keys named in the token itself (jwk, jku, x5u, x5c
// are ignored). Errors from Parse wrap [ErrMalformed]; errors from
// VerifySignature wrap [ErrBadSignature].
//
// Signing serialises the compact JWS itself around the custody crypto.Signer,
// so the private key never leaves custody (see [Sign] for why not go-jose,
// which the tests use as the reference). Verification uses
// crypto/ed25519 and crypto/ecdsa directly on the already parsed parts: the
// parser is stricter than go-jose's, and verifying what was parsed avoids
// parsing twice. Both agree with the Wycheproof JWS, Ed25519 and P-256 P1363
// vectors (see the tests).
package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/custos-dev/custos/keys"
)

// MaxSize is the largest compact token accepted, in bytes.
const MaxSize = 8 << 10

// Type is the JOSE "typ" of an access token (RFC 9068 section 2.1).
const Type = "at+jwt"

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrMalformed: the token is not a strictly encoded RFC 9068 JWT.
	ErrMalformed = errors.New("token: malformed")
	// ErrBadSignature: the signature does not verify under the given key and
	// algorithm, or the algorithm does not fit the key.
	ErrBadSignature = errors.New("token: bad signature")
	// ErrClaims: Sign was asked to sign claims that lack a required member.
	ErrClaims = errors.New("token: missing required claim")
)

// Claims are the RFC 9068 access-token claims custos issues.
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf,omitempty"`
	JTI       string `json:"jti"`
	Scope     string `json:"scope,omitempty"`
	SessionID string `json:"sid,omitempty"`
	ClientID  string `json:"client_id"`
	// Cnf binds the token to a key (RFC 7800); custos uses only the
	// DPoP JWK thumbprint (RFC 9449 section 6). Zero for a bearer token.
	Cnf Confirmation `json:"cnf,omitzero"`
}

// Confirmation is the "cnf" claim of a sender-constrained token.
type Confirmation struct {
	// JKT is the base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP
	// key the token is bound to (RFC 9449 section 6.1).
	JKT string `json:"jkt"`
}

// thumbprintLen is the length of a base64url SHA-256 digest.
const thumbprintLen = 43

// check reports the first required claim (RFC 9068 section 2.2) that is absent.
func (c *Claims) check() error {
	switch {
	case c.Issuer == "":
		return fmt.Errorf("%w: iss", ErrClaims)
	case c.Subject == "":
		return fmt.Errorf("%w: sub", ErrClaims)
	case c.Audience == "":
		return fmt.Errorf("%w: aud", ErrClaims)
	case c.ExpiresAt == 0:
		return fmt.Errorf("%w: exp", ErrClaims)
	case c.IssuedAt == 0:
		return fmt.Errorf("%w: iat", ErrClaims)
	case c.JTI == "":
		return fmt.Errorf("%w: jti", ErrClaims)
	case c.ClientID == "":
		return fmt.Errorf("%w: client_id", ErrClaims)
	case c.Cnf.JKT != "" && len(c.Cnf.JKT) != thumbprintLen:
		return fmt.Errorf("%w: cnf.jkt is not a SHA-256 thumbprint", ErrClaims)
	}
	return nil
}

// Header is the part of the JOSE header a verifier looks at.
type Header struct {
	Alg  string   `json:"alg"`
	KID  string   `json:"kid,omitempty"`
	Typ  string   `json:"typ,omitempty"`
	Crit []string `json:"crit,omitempty"`
}

// Parsed is a structurally valid token whose signature is not yet verified.
type Parsed struct {
	Header       Header
	Claims       Claims
	SigningInput []byte // ASCII(BASE64URL(header) '.' BASE64URL(payload))
	Signature    []byte
	payload      []byte
}

// Sign returns the compact serialisation of c signed by s under kid.
//
// The JWS is put together here rather than through go-jose: a compact JWS
// with a fixed three-member header is two base64url strings and a signature,
// while go-jose's signer (built per call, reflection-based JSON, JWK
// handling) cost about as much again as the Ed25519 signature itself on the
// issuance path. The tests check that the output equals go-jose's byte for
// byte (Ed25519 is deterministic) and that go-jose verifies it.
func Sign(s crypto.Signer, alg keys.Alg, kid string, c Claims) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	switch alg {
	case keys.EdDSA:
		if _, ok := s.Public().(ed25519.PublicKey); !ok {
			return "", fmt.Errorf("failed to sign: %s needs an Ed25519 key", alg)
		}
	case keys.ES256:
		if pk, ok := s.Public().(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
			return "", fmt.Errorf("failed to sign: %s needs a P-256 key", alg)
		}
	case keys.RS256:
		if pk, ok := s.Public().(*rsa.PublicKey); !ok || pk.N.BitLen() < MinRSABits {
			return "", fmt.Errorf("failed to sign: %s needs an RSA key of at least %d bits", alg, MinRSABits)
		}
	default:
		return "", fmt.Errorf("failed to sign: unsupported algorithm %q", alg)
	}
	// The header's members in go-jose's order (sorted), kid escaped as JSON.
	kidJSON, err := json.Marshal(kid)
	if err != nil {
		return "", fmt.Errorf("failed to encode header: %w", err)
	}
	header := make([]byte, 0, 48+len(kidJSON))
	header = append(header, `{"alg":"`...)
	header = append(header, alg...)
	header = append(header, `","kid":`...)
	header = append(header, kidJSON...)
	header = append(header, `,"typ":"`+Type+`"}`...)
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("failed to encode claims: %w", err)
	}
	b64 := base64.RawURLEncoding
	out := make([]byte, 0, b64.EncodedLen(len(header))+b64.EncodedLen(len(payload))+b64.EncodedLen(64)+2)
	out = b64.AppendEncode(out, header)
	out = append(out, '.')
	out = b64.AppendEncode(out, payload)
	sig, err := signInput(s, alg, out)
	if err != nil {
		return "", fmt.Errorf("failed to sign: %w", err)
	}
	out = append(out, '.')
	out = b64.AppendEncode(out, sig)
	return string(out), nil
}

// signInput signs a JWS signing input through the custody signer: Ed25519
// over the input itself, ES256 over its SHA-256 with the signature turned
// into JWS's r||s form, RS256 (PKCS #1 v1.5, which a crypto.Signer gives
// for crypto.SHA256 options) over its SHA-256.
func signInput(s crypto.Signer, alg keys.Alg, input []byte) ([]byte, error) {
	if alg == keys.EdDSA {
		return s.Sign(rand.Reader, input, crypto.Hash(0))
	}
	d := sha256.Sum256(input)
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || alg == keys.RS256 {
		return sig, err
	}
	return derToP1363(sig)
}

// MinRSABits is the smallest RSA modulus custos signs or verifies with.
const MinRSABits = 2048

// derToP1363 turns an ASN.1 ECDSA signature into the fixed-size r||s form
// that JWS (RFC 7518 section 3.4) requires.
func derToP1363(der []byte) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 {
		return nil, errors.New("failed to decode ECDSA signature from custody")
	}
	out := make([]byte, 64)
	if sig.R.BitLen() > 256 || sig.S.BitLen() > 256 {
		return nil, errors.New("failed to decode ECDSA signature from custody: out of range")
	}
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

// Parse splits and decodes a compact token and checks that it is a strictly
// encoded RFC 9068 access token. It does not verify the signature.
func Parse(raw string) (*Parsed, error) {
	p, err := parseJWS(raw)
	if err != nil {
		return nil, err
	}
	if !isAccessTokenType(p.Header.Typ) {
		return nil, fmt.Errorf("%w: typ %q is not %s", ErrMalformed, p.Header.Typ, Type)
	}
	if err := decodeClaims(p.payload, &p.Claims); err != nil {
		return nil, err
	}
	return p, nil
}

// isAccessTokenType accepts "at+jwt" and "application/at+jwt" (RFC 9068
// section 4; media type names are case-insensitive).
func isAccessTokenType(typ string) bool {
	typ = strings.ToLower(typ)
	return typ == Type || typ == "application/"+Type
}

// parseJWS is the JWS layer of Parse: three strict base64url parts, a header
// that is a JSON object without duplicate keys and with a string alg, no crit.
// The payload is returned undecoded.
func parseJWS(raw string) (*Parsed, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(raw), MaxSize)
	}
	h, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	pl, sg, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sg, ".") {
		return nil, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	if h == "" || pl == "" {
		return nil, fmt.Errorf("%w: empty header or payload", ErrMalformed)
	}
	hb, err := decodePart(h)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	pb, err := decodePart(pl)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	sb, err := decodePart(sg)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	p := &Parsed{
		SigningInput: []byte(raw[:len(h)+1+len(pl)]),
		Signature:    sb,
		payload:      pb,
	}
	if err := decodeHeader(hb, &p.Header); err != nil {
		return nil, err
	}
	return p, nil
}

var strictB64 = base64.RawURLEncoding.Strict()

// decodePart decodes one base64url part and refuses anything that would not
// re-encode to the same text: padding, non-zero trailing bits, and the line
// breaks the standard decoder silently skips.
func decodePart(s string) ([]byte, error) {
	// Strict decoding refuses non-zero trailing bits, and the raw alphabet
	// has no padding; what is left is the CR and LF the decoder skips.
	if strings.IndexByte(s, '\r') >= 0 || strings.IndexByte(s, '\n') >= 0 {
		return nil, errors.New("non-canonical base64url")
	}
	b, err := strictB64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.RawURLEncoding.EncodedLen(len(b)) != len(s) {
		return nil, errors.New("non-canonical base64url")
	}
	return b, nil
}

// decodeHeader reads the JOSE header. Members other than alg, kid, typ and
// crit are ignored: in particular jwk, jku, x5u and x5c are never used.
func decodeHeader(b []byte, h *Header) error {
	var alg, crit bool
	err := strictObject(b, func(name, v []byte) error {
		var err error
		switch string(name) {
		case "alg":
			alg = true
			h.Alg, err = jsonString(v)
		case "kid":
			h.KID, err = jsonString(v)
		case "typ":
			h.Typ, err = jsonString(v)
		case "crit":
			crit = true
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if !alg || h.Alg == "" {
		return fmt.Errorf("%w: header without alg", ErrMalformed)
	}
	// custos understands no extension header, so any crit names an extension
	// it does not understand (RFC 7515 section 4.1.11): refuse.
	if crit {
		return fmt.Errorf("%w: crit present, no extension is understood", ErrMalformed)
	}
	return nil
}

func decodeClaims(b []byte, c *Claims) error {
	err := strictObject(b, func(name, v []byte) error {
		var err error
		switch string(name) {
		case "iss":
			c.Issuer, err = jsonString(v)
		case "sub":
			c.Subject, err = jsonString(v)
		case "aud":
			c.Audience, err = jsonString(v)
		case "exp":
			c.ExpiresAt, err = jsonInt(v)
		case "iat":
			c.IssuedAt, err = jsonInt(v)
		case "nbf":
			c.NotBefore, err = jsonInt(v)
		case "jti":
			c.JTI, err = jsonString(v)
		case "scope":
			c.Scope, err = jsonString(v)
		case "sid":
			c.SessionID, err = jsonString(v)
		case "client_id":
			c.ClientID, err = jsonString(v)
		case "cnf":
			c.Cnf, err = decodeConfirmation(v)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if err := c.check(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// decodeConfirmation reads a "cnf" claim. Only {"jkt": thumbprint} is
// understood; any other confirmation method names a binding custos could not
// enforce, so the token is refused rather than treated as a bearer token.
func decodeConfirmation(v []byte) (Confirmation, error) {
	var cnf Confirmation
	if len(v) == 0 || v[0] != '{' {
		return cnf, errors.New("not an object")
	}
	err := strictObject(v, func(name, val []byte) error {
		if string(name) != "jkt" {
			return fmt.Errorf("confirmation method %q not understood", name)
		}
		var err error
		cnf.JKT, err = jsonString(val)
		return err
	})
	if err != nil {
		return Confirmation{}, err
	}
	if len(cnf.JKT) != thumbprintLen {
		return Confirmation{}, errors.New("jkt is not a SHA-256 thumbprint")
	}
	if _, err := decodePart(cnf.JKT); err != nil {
		return Confirmation{}, errors.New("jkt is not base64url")
	}
	return cnf, nil
}

// maxDepth bounds JSON nesting in untrusted headers and claims.
const maxDepth = 32

// strictObject checks that b is exactly one JSON object, valid UTF-8, nested
// at most maxDepth deep, with no duplicate member names at any depth (RFC 7515
// section 5.2 lets a parser reject them; custos does, so that no two readers
// of a token can disagree about its claims). member, when not nil, is called
// with the raw name and raw value of every top-level member.
//
// validJSON checks the grammar without allocating; the scan below then only
// has to find member names, which is several times faster than a
// token-by-token json.Decoder walk (FuzzStrictObject compares the two).
func strictObject(b []byte, member func(name, value []byte) error) error {
	if !utf8.Valid(b) {
		return errors.New("invalid UTF-8")
	}
	if !validJSON(b) {
		return errors.New("invalid JSON")
	}
	for len(b) > 0 && isJSONSpace(b[0]) {
		b = b[1:]
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	var stack [maxDepth]struct {
		obj   bool
		start int
	}
	var buf [16][]byte
	names := buf[:0]
	depth := 0
	expectKey := false
	var topName []byte
	valStart := -1
	endTop := func(i int) error {
		if valStart < 0 || member == nil {
			return nil
		}
		v := b[valStart:i]
		for len(v) > 0 && isJSONSpace(v[len(v)-1]) {
			v = v[:len(v)-1]
		}
		valStart = -1
		return member(topName, v)
	}
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			if depth == maxDepth {
				return errors.New("JSON nested too deeply")
			}
			stack[depth].obj = b[i] == '{'
			stack[depth].start = len(names)
			depth++
			expectKey = b[i] == '{'
		case '}', ']':
			if depth == 1 {
				if err := endTop(i); err != nil {
					return err
				}
			}
			depth--
			names = names[:stack[depth].start]
			expectKey = false
		case ',':
			if depth == 1 {
				if err := endTop(i); err != nil {
					return err
				}
			}
			expectKey = stack[depth-1].obj
		case ':':
			expectKey = false
			if depth == 1 {
				valStart = i + 1
				for b[valStart] == ' ' || b[valStart] == '\t' || b[valStart] == '\r' || b[valStart] == '\n' {
					valStart++
				}
			}
		case '"':
			j := i + 1
			escaped := false
			for b[j] != '"' {
				if b[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			if expectKey {
				name := b[i+1 : j]
				if escaped {
					var s string
					if err := json.Unmarshal(b[i:j+1], &s); err != nil {
						return err
					}
					name = []byte(s)
				}
				for _, n := range names[stack[depth-1].start:] {
					if bytes.Equal(n, name) {
						return fmt.Errorf("duplicate key %q", name)
					}
				}
				names = append(names, name)
				if depth == 1 {
					topName = name
				}
				expectKey = false
			}
			i = j
		}
	}
	return nil
}

// isJSONSpace reports whether c is JSON whitespace (RFC 8259 section 2);
// a loop over it is cheaper than bytes.Trim, which builds a set per call.
func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// jsonString decodes a raw JSON value that must be a string.
func jsonString(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", errors.New("not a string")
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// jsonInt decodes a raw JSON value that must be an integer.
func jsonInt(v []byte) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	return n, nil
}

// VerifySignature checks p's signature with pub. alg is the algorithm of the
// key as custody recorded it; the token's header must name exactly that
// algorithm, and pub must be of its type. "none", HS* and every other
// algorithm are refused.
func VerifySignature(p *Parsed, alg keys.Alg, pub crypto.PublicKey) error {
	if p == nil {
		return fmt.Errorf("%w: nothing parsed", ErrBadSignature)
	}
	if p.Header.Alg != string(alg) {
		return fmt.Errorf("%w: header alg %q, key alg %q", ErrBadSignature, p.Header.Alg, alg)
	}
	return verify(alg, pub, p.SigningInput, p.Signature)
}

// verify checks sig over msg. ES256 signatures must be exactly 64 bytes of
// r||s with 0 < r, s < n.
func verify(alg keys.Alg, pub crypto.PublicKey, msg, sig []byte) error {
	switch alg {
	case keys.EdDSA:
		pk, ok := pub.(ed25519.PublicKey)
		if !ok || len(pk) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: EdDSA needs an Ed25519 key", ErrBadSignature)
		}
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pk, msg, sig) {
			return ErrBadSignature
		}
		return nil
	case keys.ES256:
		pk, ok := pub.(*ecdsa.PublicKey)
		if !ok || pk.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ES256 needs a P-256 key", ErrBadSignature)
		}
		if len(sig) != 64 {
			return fmt.Errorf("%w: ES256 signature of %d bytes", ErrBadSignature, len(sig))
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		n := pk.Curve.Params().N
		if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(n) >= 0 || s.Cmp(n) >= 0 {
			return fmt.Errorf("%w: r or s out of range", ErrBadSignature)
		}
		d := sha256.Sum256(msg)
		if !ecdsa.Verify(pk, d[:], r, s) {
			return ErrBadSignature
		}
		return nil
	case keys.RS256:
		pk, ok := pub.(*rsa.PublicKey)
		if !ok || pk.N.BitLen() < MinRSABits {
			return fmt.Errorf("%w: RS256 needs an RSA key of at least %d bits", ErrBadSignature, MinRSABits)
		}
		if len(sig) != pk.Size() {
			return fmt.Errorf("%w: RS256 signature of %d bytes, key of %d", ErrBadSignature, len(sig), pk.Size())
		}
		d := sha256.Sum256(msg)
		if rsa.VerifyPKCS1v15(pk, crypto.SHA256, d[:], sig) != nil {
			return ErrBadSignature
		}
		return nil
	}
	return fmt.Errorf("%w: algorithm %q not allowed", ErrBadSignature, alg)
}
