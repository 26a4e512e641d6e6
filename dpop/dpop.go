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
// go-jose parses the jwk (once per key: see keyCache); its thumbprint is
// hashed from the RFC 7638 members written directly. The compact JWS is split and decoded by hand with package
// token's strict rules (canonical base64url, no duplicate JSON members, no
// crit) into a pooled buffer, its header and claims read member by member
// with token's scanner (no map or tree per proof, no string per member: a
// good proof allocates its Proof and one string), and the signature checked
// with token's verifier, which the Wycheproof vectors test: go-jose's JWS
// parser accepts padded base64 and duplicate members, and would let two
// readers of one proof disagree about it. A proof then costs one signature verification and
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
	"sync/atomic"
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
	// Signatures, when set, counts the proof signatures Verify checks, so
	// that a caller can show what a request cost.
	Signatures *atomic.Uint64
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}

// Verify parses raw and checks it against e.
func Verify(raw string, e Expect) (*Proof, error) {
	if len(raw) > MaxSize {
		return nil, invalid("%d bytes, more than %d", len(raw), MaxSize)
	}
	buf := scratchPool.Get().(*scratch)
	defer scratchPool.Put(buf)
	p, c, err := parse(raw, buf, e.Signatures)
	if err != nil {
		return nil, err
	}
	if p.HTM != e.Method || e.Method == "" {
		return nil, invalid("htm %q, request method %q", p.HTM, e.Method)
	}
	want, err := CanonicalURL(e.URL)
	if err != nil {
		return nil, invalid("request URL: %v", err)
	}
	got, err := CanonicalURL(p.HTU)
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
	case e.AccessToken != "" && (!c.hasATH || !athMatches(c.ath, e.AccessToken)):
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

// athMatches reports whether ath is ATH(accessToken), without allocating
// for a token of up to 2 KiB (hashed from a copy on the stack).
func athMatches(ath []byte, accessToken string) bool {
	var in [2 << 10]byte
	var h [sha256.Size]byte
	if len(accessToken) <= len(in) {
		h = sha256.Sum256(in[:copy(in[:], accessToken)])
	} else {
		h = sha256.Sum256([]byte(accessToken))
	}
	var b [43]byte
	base64.RawURLEncoding.Encode(b[:], h[:])
	return bytes.Equal(b[:], ath)
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of an Ed25519 or P-256 public
// key, base64url: the value of cnf.jkt. The hash input, the key's required
// members in lexical order without white space, is written straight into a
// buffer (TestThumbprintMatchesGoJose checks it against go-jose's).
func Thumbprint(pub crypto.PublicKey) (string, error) {
	var in [128]byte
	b := in[:0]
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", invalid("Ed25519 key of %d bytes", len(k))
		}
		b = append(b, `{"crv":"Ed25519","kty":"OKP","x":"`...)
		b = base64.RawURLEncoding.AppendEncode(b, k)
		b = append(b, `"}`...)
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", invalid("only P-256 EC keys")
		}
		pt, err := k.Bytes() // 0x04 || x || y, 32 bytes each
		if err != nil || len(pt) != 65 {
			return "", invalid("P-256 key: %v", err)
		}
		b = append(b, `{"crv":"P-256","kty":"EC","x":"`...)
		b = base64.RawURLEncoding.AppendEncode(b, pt[1:33])
		b = append(b, `","y":"`...)
		b = base64.RawURLEncoding.AppendEncode(b, pt[33:])
		b = append(b, `"}`...)
	default:
		return "", invalid("key type %T", pub)
	}
	h := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(h[:]), nil
}

// foldSet refuses member names that differ only in letter case within one
// object: names are matched exactly here, but go-jose reads the jwk with
// encoding/json, which matches them case-insensitively, so
// {"x":..,"X":..} could be read two ways. A proof's objects have a handful of
// members, so the quadratic check is cheaper than a map.
type foldSet struct {
	n    int
	buf  [16][]byte // the first names, kept here so that the set stays on the stack
	more [][]byte
}

func (f *foldSet) add(name []byte) error {
	for _, n := range f.buf[:f.n] {
		if bytes.EqualFold(n, name) {
			return fmt.Errorf("members differ only in case: %q", name)
		}
	}
	for _, n := range f.more {
		if bytes.EqualFold(n, name) {
			return fmt.Errorf("members differ only in case: %q", name)
		}
	}
	if f.n < len(f.buf) {
		f.buf[f.n] = name
		f.n++
	} else {
		f.more = append(f.more, name)
	}
	return nil
}

// header is what parse reads of a proof's JOSE header. Its slices point
// into the proof's scratch buffer.
type header struct {
	typ, alg  []byte
	jwk       []byte // raw value
	hasTyp    bool
	forbidden string // the first of crit, kid, jku, x5u, x5c present
}

// text is a JSON string value as token.ScanObject gives it (the grammar
// already checked), without its quotes: a slice of v when it has no escape,
// else decoded (rare; allocates).
func text(v []byte) ([]byte, error) {
	if len(v) >= 2 && v[0] == '"' && bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], nil
	}
	s, err := token.String(v)
	return []byte(s), err
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
			h.typ, err = text(v)
		case "alg":
			h.alg, err = text(v)
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

// claims is what parse reads of a proof's claims. Its slices point into the
// proof's scratch buffer; Proof gets copies.
type claims struct {
	jti, htm, htu, ath, nonce []byte
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
			c.jti, err = text(v)
		case "htm":
			c.htm, err = text(v)
		case "htu":
			c.htu, err = text(v)
		case "ath":
			c.hasATH = true
			c.ath, err = text(v)
		case "nonce":
			c.nonce, err = text(v)
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

// scratch is the working memory of one Verify: a copy of the proof (the
// signing input must be a byte slice) and its three parts decoded, so that a
// proof is read without allocating per part. Pooled; nothing that points
// into it outlives Verify.
type scratch [2*MaxSize + 8]byte

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// parse splits, decodes and checks the structure and signature of a proof,
// in buf; signatures, when not nil, counts the signature verifications.
func parse(raw string, buf *scratch, signatures *atomic.Uint64) (*Proof, claims, error) {
	if len(raw) > MaxSize {
		return nil, claims{}, invalid("%d bytes, more than %d", len(raw), MaxSize)
	}
	in := buf[:copy(buf[:MaxSize], raw)]
	hs, rest, ok := bytes.Cut(in, dot)
	ps, ss, ok2 := bytes.Cut(rest, dot)
	if !ok || !ok2 || bytes.IndexByte(ss, '.') >= 0 || len(hs) == 0 || len(ps) == 0 {
		return nil, claims{}, invalid("not a compact JWS")
	}
	// The decoded parts (3/4 of the text at most) follow the copy.
	out := buf[MaxSize:MaxSize]
	hb, err := token.AppendSegment(out, hs)
	if err != nil {
		return nil, claims{}, invalid("header: %v", err)
	}
	pb, err := token.AppendSegment(hb[len(hb):], ps)
	if err != nil {
		return nil, claims{}, invalid("payload: %v", err)
	}
	sig, err := token.AppendSegment(pb[len(pb):], ss)
	if err != nil {
		return nil, claims{}, invalid("signature: %v", err)
	}
	h, err := readHeader(hb)
	if err != nil {
		return nil, claims{}, invalid("header: %v", err)
	}
	c, err := readClaims(pb)
	if err != nil {
		return nil, claims{}, invalid("claims: %v", err)
	}
	if t := h.typ; !h.hasTyp || !bytes.EqualFold(t, []byte(Type)) && !bytes.EqualFold(t, []byte("application/"+Type)) {
		return nil, claims{}, invalid("typ %q", h.typ)
	}
	if h.forbidden != "" {
		return nil, claims{}, invalid("header carries %q", h.forbidden)
	}
	var alg keys.Alg
	switch string(h.alg) {
	case string(keys.EdDSA):
		alg = keys.EdDSA
	case string(keys.ES256):
		alg = keys.ES256
	default:
		return nil, claims{}, invalid("alg %q not allowed", h.alg)
	}
	key, err := jwkOf(h.jwk, alg)
	if err != nil {
		return nil, claims{}, err
	}
	pub := key.pub
	jws := token.Parsed{Header: token.Header{Alg: string(alg)}, SigningInput: in[:len(hs)+1+len(ps)], Signature: sig}
	if signatures != nil {
		signatures.Add(1)
	}
	if err := token.VerifySignature(&jws, alg, pub); err != nil {
		return nil, claims{}, invalid("signature: %v", err)
	}
	if !c.hasJTI || len(c.jti) == 0 || len(c.jti) > MaxJTI {
		return nil, claims{}, invalid("jti missing or longer than %d", MaxJTI)
	}
	if !c.hasIAT {
		return nil, claims{}, invalid("iat missing or not a NumericDate")
	}
	p := &Proof{JKT: key.jkt, Alg: alg, Key: pub, IssuedAt: time.Unix(int64(c.iat), 0)}
	// The four strings of Proof, from one allocation.
	var all strings.Builder
	all.Grow(len(c.jti) + len(c.htm) + len(c.htu) + len(c.nonce))
	for _, b := range [...][]byte{c.jti, c.htm, c.htu, c.nonce} {
		all.Write(b)
	}
	s := all.String()
	p.JTI, s = s[:len(c.jti)], s[len(c.jti):]
	p.HTM, s = s[:len(c.htm)], s[len(c.htm):]
	p.HTU, p.Nonce = s[:len(c.htu)], s[len(c.htu):]
	return p, c, nil
}

var dot = []byte{'.'}

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
	raw = bytes.Clone(raw) // it points into the proof's scratch buffer
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
