// Package dpop verifies RFC 9449 DPoP proofs: the short JWT a client signs
// with its own key on every request, which binds an access token to that key
// (cnf.jkt, the key's RFC 7638 thumbprint) so that a copied token is useless
// without the key.
//
// [Verify] checks one proof against the request it came with: typ dpop+jwt,
// alg EdDSA or ES256 only, a public jwk header key (no private or symmetric
// member, no x5c, jku, x5u or kid key references), the signature under that
// key, htm, htu against the canonical request URL ([CanonicalURL]), iat
// within a window, a jti, ath (the access token's SHA-256) and, when the
// server asks, a nonce. Replay of a jti is the caller's part ([Replay]), as
// it needs state shared between replicas.
//
// go-jose parses the jwk and computes its thumbprint (once per key: see
// keyCache). The compact JWS is split and decoded by hand with package
// token's strict rules (canonical base64url, no duplicate JSON members, no
// crit), its header and claims read member by member with token's scanner
// (no map or tree per proof), and the signature checked with token's
// verifier, which the Wycheproof vectors test: go-jose's JWS parser accepts
// padded base64 and duplicate members, and would let two readers of one
// proof disagree about it. A proof then costs one signature verification and
// little else (BenchmarkWarmPathDPoP in package gateway).
package dpop

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/token"
)

// Type is the JOSE typ of a DPoP proof (RFC 9449 section 4.2).
const Type = "dpop+jwt"

// MaxSize is the largest proof accepted, in bytes.
const MaxSize = 4 << 10

// MaxJTI bounds the length of a proof's jti.
const MaxJTI = 256

// DefaultWindow is how far a proof's iat may be from the verifier's clock.
const DefaultWindow = time.Minute

// Algs are the proof algorithms accepted, as advertised in metadata
// (dpop_signing_alg_values_supported) and WWW-Authenticate algs.
var Algs = []string{string(keys.EdDSA), string(keys.ES256)}

// Errors. Every refusal wraps ErrInvalid; a missing or stale nonce wraps
// ErrUseNonce too, so the server can answer with a fresh one.
var (
	ErrInvalid  = errors.New("dpop: invalid proof")
	ErrUseNonce = errors.New("dpop: use_dpop_nonce")
)

// Proof is a verified proof.
type Proof struct {
	JKT      string // RFC 7638 SHA-256 thumbprint of the key, base64url
	JTI      string
	HTM, HTU string
	IssuedAt time.Time
	Nonce    string
	Alg      keys.Alg
	Key      crypto.PublicKey
}

// Expect is what a proof must match.
type Expect struct {
	Method string // the request's method, compared exactly
	// URL is the request URL, absolute; it is compared with htu after both
	// go through CanonicalURL.
	URL string
	// AccessToken, when set, must hash to ath. Empty (at the token
	// endpoint): the proof must carry no ath.
	AccessToken string
	// Nonce, when set, says whether a nonce is one the server issued and
	// still accepts; a proof without one, or with another, is refused with
	// ErrUseNonce. Nil: nonces are not used.
	Nonce func(string) bool
	Now   time.Time
	// Window bounds |now - iat| (0: DefaultWindow).
	Window time.Duration
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}

// Verify parses raw and checks it against e.
func Verify(raw string, e Expect) (*Proof, error) {
	p, c, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if c.HTM != e.Method || e.Method == "" {
		return nil, invalid("htm %q, request method %q", c.HTM, e.Method)
	}
	want, err := CanonicalURL(e.URL)
	if err != nil {
		return nil, invalid("request URL: %v", err)
	}
	got, err := CanonicalURL(c.HTU)
	if err != nil {
		return nil, invalid("htu: %v", err)
	}
	if got != want {
		return nil, invalid("htu %q, request %q", got, want)
	}
	window := e.Window
	if window <= 0 {
		window = DefaultWindow
	}
	if d := e.Now.Sub(p.IssuedAt); d > window || d < -window {
		return nil, invalid("iat %s is %s from now", p.IssuedAt.UTC().Format(time.RFC3339), d.Round(time.Second))
	}
	switch {
	case e.AccessToken == "" && c.hasATH:
		return nil, invalid("ath without an access token")
	case e.AccessToken != "" && (!c.hasATH || !athMatches(c.ATH, e.AccessToken)):
		return nil, invalid("ath does not match the access token")
	}
	if e.Nonce != nil && (p.Nonce == "" || !e.Nonce(p.Nonce)) {
		return nil, fmt.Errorf("%w: %w: nonce missing or not current", ErrInvalid, ErrUseNonce)
	}
	return p, nil
}

// ATH is the ath claim for an access token: base64url(SHA-256(token)).
func ATH(accessToken string) string {
	h := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// athMatches reports whether ath is ATH(accessToken), without allocating.
func athMatches(ath, accessToken string) bool {
	h := sha256.Sum256([]byte(accessToken))
	var b [43]byte
	base64.RawURLEncoding.Encode(b[:], h[:])
	return string(b[:]) == ath
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of an Ed25519 or P-256 public
// key, base64url: the value of cnf.jkt.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", invalid("only P-256 EC keys")
		}
	default:
		return "", invalid("key type %T", pub)
	}
	jwk := jose.JSONWebKey{Key: pub}
	t, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", invalid("thumbprint: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}

// foldSet refuses member names that differ only in letter case within one
// object: names are matched exactly here, but go-jose reads the jwk with
// encoding/json, which matches them case-insensitively, so
// {"x":..,"X":..} could be read two ways. A proof's objects have a handful of
// members, so the quadratic check is cheaper than a map.
type foldSet struct {
	buf   [16][]byte
	names [][]byte
}

func (f *foldSet) add(name []byte) error {
	if f.names == nil {
		f.names = f.buf[:0]
	}
	for _, n := range f.names {
		if bytes.EqualFold(n, name) {
			return fmt.Errorf("members differ only in case: %q", name)
		}
	}
	f.names = append(f.names, name)
	return nil
}

// header is what parse reads of a proof's JOSE header.
type header struct {
	typ, alg  string
	jwk       []byte // raw value
	hasTyp    bool
	forbidden string // the first of crit, kid, jku, x5u, x5c present
}

// readHeader scans the header without building a tree of it.
func readHeader(b []byte) (header, error) {
	var h header
	var fold foldSet
	err := token.ScanObject(b, func(name, v []byte) error {
		if err := fold.add(name); err != nil {
			return err
		}
		var err error
		switch string(name) {
		case "typ":
			h.hasTyp = true
			h.typ, err = token.String(v)
		case "alg":
			h.alg, err = token.String(v)
		case "jwk":
			h.jwk = v
		case "crit", "kid", "jku", "x5u", "x5c":
			if h.forbidden == "" {
				h.forbidden = string(name)
			}
		}
		if err != nil {
			return fmt.Errorf("%s is not a string", name)
		}
		return nil
	})
	return h, err
}

type claims struct {
	JTI, HTM, HTU, ATH, Nonce string
	hasATH, hasJTI            bool
	iat                       float64
	hasIAT                    bool
}

// readClaims scans the proof's claims without building a tree of them.
func readClaims(b []byte) (claims, error) {
	var c claims
	var fold foldSet
	err := token.ScanObject(b, func(name, v []byte) error {
		if err := fold.add(name); err != nil {
			return err
		}
		var err error
		switch string(name) {
		case "jti":
			c.hasJTI = true
			c.JTI, err = token.String(v)
		case "htm":
			c.HTM, err = token.String(v)
		case "htu":
			c.HTU, err = token.String(v)
		case "ath":
			c.hasATH = true
			c.ATH, err = token.String(v)
		case "nonce":
			c.Nonce, err = token.String(v)
		case "iat":
			// A JSON number (the grammar is checked already): strconv
			// reads exactly its syntax; a string, null or bool fails.
			iat, perr := strconv.ParseFloat(string(v), 64)
			c.hasIAT = perr == nil && iat >= 0 && iat < 1<<40 && !math.IsNaN(iat)
			c.iat = iat
		}
		if err != nil {
			return fmt.Errorf("%s is not a string", name)
		}
		return nil
	})
	return c, err
}

// privateMembers are JWK members that carry private or symmetric key
// material (RFC 7518 section 6, RFC 8037).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// parse splits, decodes and checks the structure and signature of a proof.
func parse(raw string) (*Proof, *claims, error) {
	if len(raw) > MaxSize {
		return nil, nil, invalid("%d bytes, more than %d", len(raw), MaxSize)
	}
	hs, rest, ok := strings.Cut(raw, ".")
	ps, ss, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(ss, ".") || hs == "" || ps == "" {
		return nil, nil, invalid("not a compact JWS")
	}
	hb, err := token.DecodeSegment(hs)
	if err != nil {
		return nil, nil, invalid("header: %v", err)
	}
	pb, err := token.DecodeSegment(ps)
	if err != nil {
		return nil, nil, invalid("payload: %v", err)
	}
	sig, err := token.DecodeSegment(ss)
	if err != nil {
		return nil, nil, invalid("signature: %v", err)
	}
	h, err := readHeader(hb)
	if err != nil {
		return nil, nil, invalid("header: %v", err)
	}
	c, err := readClaims(pb)
	if err != nil {
		return nil, nil, invalid("claims: %v", err)
	}
	if t := h.typ; !h.hasTyp || !strings.EqualFold(t, Type) && !strings.EqualFold(t, "application/"+Type) {
		return nil, nil, invalid("typ %q", h.typ)
	}
	if h.forbidden != "" {
		return nil, nil, invalid("header carries %q", h.forbidden)
	}
	alg := keys.Alg(h.alg)
	if alg != keys.EdDSA && alg != keys.ES256 {
		return nil, nil, invalid("alg %q not allowed", h.alg)
	}
	key, err := jwkOf(h.jwk, alg)
	if err != nil {
		return nil, nil, err
	}
	pub := key.pub
	jws := &token.Parsed{Header: token.Header{Alg: h.alg}, SigningInput: []byte(raw[:len(hs)+1+len(ps)]), Signature: sig}
	if err := token.VerifySignature(jws, alg, pub); err != nil {
		return nil, nil, invalid("signature: %v", err)
	}
	if !c.hasJTI || c.JTI == "" || len(c.JTI) > MaxJTI {
		return nil, nil, invalid("jti missing or longer than %d", MaxJTI)
	}
	if !c.hasIAT {
		return nil, nil, invalid("iat missing or not a NumericDate")
	}
	p := &Proof{JKT: key.jkt, JTI: c.JTI, HTM: c.HTM, HTU: c.HTU, Alg: alg, Key: pub, Nonce: c.Nonce,
		IssuedAt: time.Unix(int64(c.iat), 0)}
	return p, &c, nil
}

// parsedKey is a jwk header already read: its key and thumbprint.
type parsedKey struct {
	pub crypto.PublicKey
	jkt string
}

// keyCache remembers the jwk headers read lately, by alg and their exact
// bytes: a client signs every proof with the same key, and reading the JWK
// and hashing its thumbprint again would cost a fair part of a verification.
// Only keys that were read successfully are kept; at maxCachedKeys the cache
// starts over. A lookup does not allocate (m[string(raw)]).
var keyCache = struct {
	sync.Mutex
	ed, ec map[string]parsedKey
}{ed: map[string]parsedKey{}, ec: map[string]parsedKey{}}

const maxCachedKeys = 50_000

// jwkOf reads a proof's jwk through keyCache.
func jwkOf(raw []byte, alg keys.Alg) (parsedKey, error) {
	keyCache.Lock()
	m := keyCache.ed
	if alg == keys.ES256 {
		m = keyCache.ec
	}
	k, ok := m[string(raw)]
	keyCache.Unlock()
	if ok {
		return k, nil
	}
	pub, err := publicJWK(raw, alg)
	if err != nil {
		return parsedKey{}, err
	}
	jkt, err := Thumbprint(pub)
	if err != nil {
		return parsedKey{}, err
	}
	k = parsedKey{pub: pub, jkt: jkt}
	keyCache.Lock()
	if len(m) >= maxCachedKeys {
		clear(m)
	}
	m[string(raw)] = k
	keyCache.Unlock()
	return k, nil
}

// publicJWK reads the header's jwk: a public Ed25519 or P-256 key that fits alg.
func publicJWK(raw []byte, alg keys.Alg) (crypto.PublicKey, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalid("jwk header missing or not an object")
	}
	var fold foldSet
	err := token.ScanObject(raw, func(name, _ []byte) error {
		if err := fold.add(name); err != nil {
			return err
		}
		if slices.Contains(privateMembers, string(name)) {
			return fmt.Errorf("private member %q", name)
		}
		if n := string(name); n == "x5c" || n == "x5u" {
			return fmt.Errorf("member %q", name)
		}
		return nil
	})
	if err != nil {
		return nil, invalid("jwk: %v", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, invalid("jwk: %v", err)
	}
	if !jwk.IsPublic() {
		return nil, invalid("jwk is not a public key")
	}
	if jwk.Algorithm != "" && jwk.Algorithm != string(alg) {
		return nil, invalid("jwk alg %q, header alg %q", jwk.Algorithm, alg)
	}
	switch k := jwk.Key.(type) {
	case ed25519.PublicKey:
		if alg == keys.EdDSA && len(k) == ed25519.PublicKeySize {
			return k, nil
		}
	case *ecdsa.PublicKey:
		if alg == keys.ES256 && k.Curve == elliptic.P256() {
			return k, nil
		}
	}
	return nil, invalid("jwk %T does not fit alg %s", jwk.Key, alg)
}
