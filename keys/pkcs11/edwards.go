package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"filippo.io/edwards25519"
	p11 "github.com/miekg/pkcs11"
)

// PKCS#11 3.0 Edwards-curve constants (PKCS #11 Cryptographic Token
// Interface Current Mechanisms Specification 3.0, section 2.3); neither
// crypto11 v1.6.2 nor github.com/miekg/pkcs11 v1.1.2 defines them.
const (
	ckkECEdwards           = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x1057 // CKM_EDDSA
)

// edwards25519Params is CKA_EC_PARAMS for edwards25519: the DER OBJECT
// IDENTIFIER 1.3.101.112 (id-Ed25519, RFC 8410), the form SoftHSM2 2.6 and
// most tokens take when generating.
var edwards25519Params = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

// edwards25519Name is the other form PKCS#11 3.0 allows for CKA_EC_PARAMS:
// the DER PrintableString "edwards25519".
var edwards25519Name = append([]byte{0x13, 0x0c}, "edwards25519"...)

// maxEdSessions bounds the sessions the Ed25519 path opens on the token.
const maxEdSessions = 16

// isEd25519Params reports whether the CKA_EC_PARAMS a token returned name
// edwards25519, in either form PKCS#11 3.0 allows. Anything else (Ed448,
// a Weierstrass curve, garbage) is not.
func isEd25519Params(b []byte) bool {
	return bytes.Equal(b, edwards25519Params) || bytes.Equal(b, edwards25519Name)
}

// parseEdwardsPoint reads an Ed25519 public key from CKA_EC_POINT. PKCS#11
// 3.0 gives it as a DER OCTET STRING holding the 32-byte RFC 8032
// encoding (04 20 || A); some tokens return the bare 32 bytes. Every other
// shape is refused, and the bytes are checked to be a point on the curve.
func parseEdwardsPoint(b []byte) (ed25519.PublicKey, error) {
	var raw []byte
	switch {
	case len(b) == 2+ed25519.PublicKeySize && b[0] == 0x04 && b[1] == ed25519.PublicKeySize:
		raw = b[2:]
	case len(b) == ed25519.PublicKeySize:
		raw = b
	default:
		return nil, fmt.Errorf("pkcs11: CKA_EC_POINT of %d bytes is not an Ed25519 public key", len(b))
	}
	if !onCurve(raw) {
		return nil, errors.New("pkcs11: CKA_EC_POINT is not a point of edwards25519")
	}
	return ed25519.PublicKey(bytes.Clone(raw)), nil
}

// onCurve reports whether raw is the canonical encoding of a point of
// edwards25519 (RFC 8032 section 5.1.3).
func onCurve(raw []byte) bool {
	p, err := new(edwards25519.Point).SetBytes(raw)
	return err == nil && bytes.Equal(p.Bytes(), raw)
}

// edwards is the Ed25519 part of a Token: its own session pool on the
// token, since crypto11 does not expose its PKCS#11 context.
type edwards struct {
	ctx  *p11.Ctx
	slot uint
	pin  string
	// supported is whether the token lists both CKM_EC_EDWARDS_KEY_PAIR_GEN
	// and CKM_EDDSA in C_GetMechanismList, flagged for key pair generation
	// and signing.
	supported bool

	mu     sync.Mutex
	idle   []p11.SessionHandle
	open   int
	free   *sync.Cond
	closed bool
}

// openEdwards loads module again (the dynamic loader shares it with
// crypto11's instance, so C_Initialize reports it already initialized),
// finds the token by label and reads its mechanism list.
func openEdwards(module, label, pin string) (*edwards, error) {
	ctx := p11.New(module)
	if ctx == nil {
		return nil, fmt.Errorf("failed to load PKCS#11 module %q", module)
	}
	if err := ctx.Initialize(); err != nil && !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("failed to initialize PKCS#11 module: %w", err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("failed to list PKCS#11 slots: %w", err)
	}
	e := &edwards{ctx: ctx, pin: pin}
	e.free = sync.NewCond(&e.mu)
	found := false
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		if err == nil && strings.TrimRight(info.Label, " ") == label {
			e.slot, found = s, true
			break
		}
	}
	if !found {
		ctx.Destroy()
		return nil, fmt.Errorf("no PKCS#11 token labelled %q", label)
	}
	mechs, err := ctx.GetMechanismList(e.slot)
	if err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("failed to list the token's mechanisms: %w", err)
	}
	var gen, sign bool
	for _, m := range mechs {
		gen = gen || m.Mechanism == ckmECEdwardsKeyPairGen
		sign = sign || m.Mechanism == ckmEdDSA
	}
	// Listed is not enough: the mechanisms must be usable for key pair
	// generation and signing (C_GetMechanismInfo flags).
	e.supported = gen && sign &&
		mechFlag(ctx, e.slot, ckmECEdwardsKeyPairGen, p11.CKF_GENERATE_KEY_PAIR) &&
		mechFlag(ctx, e.slot, ckmEdDSA, p11.CKF_SIGN)
	return e, nil
}

// mechFlag reports whether the token's C_GetMechanismInfo for mech has flag.
func mechFlag(ctx *p11.Ctx, slot, mech, flag uint) bool {
	info, err := ctx.GetMechanismInfo(slot, []*p11.Mechanism{p11.NewMechanism(mech, nil)})
	return err == nil && info.Flags&flag != 0
}

func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// session takes a logged-in session from the pool, opening one if fewer
// than maxEdSessions are open.
func (e *edwards) session() (p11.SessionHandle, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if e.closed {
			return 0, errors.New("pkcs11: token closed")
		}
		if n := len(e.idle); n > 0 {
			s := e.idle[n-1]
			e.idle = e.idle[:n-1]
			return s, nil
		}
		if e.open < maxEdSessions {
			break
		}
		e.free.Wait()
	}
	s, err := e.ctx.OpenSession(e.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("failed to open a PKCS#11 session: %w", err)
	}
	// Login state is per application and token: the first session logs in,
	// the others find it done.
	if err := e.ctx.Login(s, p11.CKU_USER, e.pin); err != nil && !isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		e.ctx.CloseSession(s)
		return 0, fmt.Errorf("failed to log in to the token: %w", err)
	}
	e.open++
	return s, nil
}

// release returns s to the pool, or closes it when it failed (a session
// in an unknown state is not reused) or the pool is closed.
func (e *edwards) release(s p11.SessionHandle, failed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if failed || e.closed {
		e.ctx.CloseSession(s)
		e.open--
	} else {
		e.idle = append(e.idle, s)
	}
	e.free.Broadcast() // a waiting session taker, or close waiting for open == 0
}

// with runs f on a pooled session.
func (e *edwards) with(f func(s p11.SessionHandle) error) error {
	s, err := e.session()
	if err != nil {
		return err
	}
	err = f(s)
	e.release(s, err != nil)
	return err
}

// close closes every session, waiting for those in use, and unloads the
// module reference. It never calls C_Finalize: crypto11 shares the library
// instance and finalizes it when its last context closes.
func (e *edwards) close() {
	e.mu.Lock()
	e.closed = true
	for _, s := range e.idle {
		e.ctx.CloseSession(s)
		e.open--
	}
	e.idle = nil
	e.free.Broadcast()
	for e.open > 0 {
		e.free.Wait()
	}
	e.mu.Unlock()
	e.ctx.Destroy()
}

func idTemplate(class uint, id string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, class),
		p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
		p11.NewAttribute(p11.CKA_ID, []byte(id)),
	}
}

// findObjects returns the handles matching tmpl (at most 2: more than one
// is already an error for callers).
func (e *edwards) findObjects(s p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := e.ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	hs, _, err := e.ctx.FindObjects(s, 2)
	if ferr := e.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	return hs, err
}

// generate makes an Ed25519 key pair inside the token under id. The private
// half is a token object, private, sensitive, not extractable, sign only;
// the token's answer is checked (attributes read back, a probe signature
// verified with the public key) and the pair destroyed if it falls short.
func (e *edwards) generate(id string) (*edSigner, error) {
	if !e.supported {
		return nil, fmt.Errorf("%w: the token lists no CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA (set keys.alg: ES256)", ErrUnsupported)
	}
	var out *edSigner
	err := e.with(func(s p11.SessionHandle) error {
		pubT := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, false),
			p11.NewAttribute(p11.CKA_VERIFY, true),
			p11.NewAttribute(p11.CKA_EC_PARAMS, edwards25519Params),
			p11.NewAttribute(p11.CKA_ID, []byte(id)),
			p11.NewAttribute(p11.CKA_LABEL, []byte(id)),
		}
		privT := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_SIGN, true),
			p11.NewAttribute(p11.CKA_DERIVE, false),
			p11.NewAttribute(p11.CKA_ID, []byte(id)),
			p11.NewAttribute(p11.CKA_LABEL, []byte(id)),
		}
		pubH, privH, err := e.ctx.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("failed to generate Ed25519 key %q in token: %w", id, err)
		}
		sg, err := e.load(s, id, privH, pubH)
		if err == nil {
			err = checkPrivate(e.ctx, s, privH)
		}
		if err == nil {
			err = sg.probe(s)
		}
		if err != nil {
			e.ctx.DestroyObject(s, privH)
			e.ctx.DestroyObject(s, pubH)
			return fmt.Errorf("refused Ed25519 key %q the token made: %w", id, err)
		}
		out = sg
		return nil
	})
	return out, err
}

// checkPrivate reads back the private half's protection attributes: a
// token that ignored the template is refused.
func checkPrivate(ctx *p11.Ctx, s p11.SessionHandle, h p11.ObjectHandle) error {
	attrs, err := ctx.GetAttributeValue(s, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_TOKEN, nil),
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_PRIVATE, nil),
	})
	if err != nil {
		return fmt.Errorf("failed to read the private key's attributes: %w", err)
	}
	want := []byte{1, 1, 0, 1}
	for i, a := range attrs {
		if len(a.Value) != 1 || a.Value[0] != want[i] {
			return fmt.Errorf("private key attribute %#x is %v, want %d", a.Type, a.Value, want[i])
		}
	}
	return nil
}

// load builds the signer of a key pair from its handles, reading and
// checking the public half's curve and point.
func (e *edwards) load(s p11.SessionHandle, id string, privH, pubH p11.ObjectHandle) (*edSigner, error) {
	attrs, err := e.ctx.GetAttributeValue(s, pubH, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_EC_PARAMS, nil),
		p11.NewAttribute(p11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read the public key of %q: %w", id, err)
	}
	if !isEd25519Params(attrs[0].Value) {
		return nil, fmt.Errorf("key %q is on another Edwards curve (CKA_EC_PARAMS %x)", id, attrs[0].Value)
	}
	pub, err := parseEdwardsPoint(attrs[1].Value)
	if err != nil {
		return nil, err
	}
	return &edSigner{e: e, id: id, priv: privH, pub: pub}, nil
}

// find returns the Ed25519 key pair stored under id, nil if there is none.
// Like generate, it signs a probe and verifies it with the public half, so
// a pair whose public object was swapped is refused before it is used.
func (e *edwards) find(id string) (*edSigner, error) {
	var out *edSigner
	err := e.with(func(s p11.SessionHandle) error {
		privs, err := e.findObjects(s, idTemplate(p11.CKO_PRIVATE_KEY, id))
		if err != nil {
			return fmt.Errorf("failed to look up key %q in token: %w", id, err)
		}
		if len(privs) == 0 {
			return nil
		}
		pubs, err := e.findObjects(s, idTemplate(p11.CKO_PUBLIC_KEY, id))
		if err != nil {
			return fmt.Errorf("failed to look up key %q in token: %w", id, err)
		}
		if len(privs) != 1 || len(pubs) != 1 {
			return fmt.Errorf("pkcs11: %d private and %d public Ed25519 objects under id %q, want one each", len(privs), len(pubs), id)
		}
		sg, err := e.load(s, id, privs[0], pubs[0])
		if err == nil {
			err = sg.probe(s)
		}
		if err != nil {
			return fmt.Errorf("refused Ed25519 key %q in token: %w", id, err)
		}
		out = sg
		return nil
	})
	return out, err
}

// destroy deletes id's Ed25519 objects; false if there were none.
func (e *edwards) destroy(id string) (bool, error) {
	found := false
	err := e.with(func(s p11.SessionHandle) error {
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			hs, err := e.findObjects(s, idTemplate(class, id))
			if err != nil {
				return fmt.Errorf("failed to look up key %q in token: %w", id, err)
			}
			for _, h := range hs {
				if err := e.ctx.DestroyObject(s, h); err != nil {
					return fmt.Errorf("failed to destroy key %q in token: %w", id, err)
				}
				found = true
			}
		}
		return nil
	})
	return found, err
}

// edSigner signs with an Ed25519 private key inside the token through
// CKM_EDDSA (pure Ed25519, no context, no prehash).
type edSigner struct {
	e         *edwards
	id        string
	priv      p11.ObjectHandle
	pub       ed25519.PublicKey
	destroyed atomic.Bool
}

var _ crypto.Signer = (*edSigner)(nil)

// Public returns the ed25519.PublicKey.
func (s *edSigner) Public() crypto.PublicKey { return s.pub }

// Sign signs message itself (not a digest) in the token; opts must ask for
// pure Ed25519 (crypto.Hash(0), no context).
func (s *edSigner) Sign(_ io.Reader, message []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.Hash(0) {
		return nil, errors.New("pkcs11: Ed25519 signs the message itself, not a digest (Ed25519ph is not supported)")
	}
	if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
		return nil, errors.New("pkcs11: Ed25519ctx is not supported")
	}
	if s.destroyed.Load() {
		return nil, fmt.Errorf("pkcs11: key %q was destroyed", s.id)
	}
	var sig []byte
	err := s.e.with(func(sh p11.SessionHandle) error {
		var err error
		sig, err = s.sign(sh, message)
		return err
	})
	return sig, err
}

func (s *edSigner) sign(sh p11.SessionHandle, message []byte) ([]byte, error) {
	if err := s.e.ctx.SignInit(sh, []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, nil)}, s.priv); err != nil {
		return nil, fmt.Errorf("failed to sign with key %q in token: %w", s.id, err)
	}
	sig, err := s.e.ctx.Sign(sh, message)
	if err != nil {
		return nil, fmt.Errorf("failed to sign with key %q in token: %w", s.id, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("pkcs11: the token returned a %d-byte Ed25519 signature", len(sig))
	}
	return sig, nil
}

// probe signs a random message in the token and verifies it with the public
// key read from CKA_EC_POINT: a key whose halves do not match is refused.
func (s *edSigner) probe(sh p11.SessionHandle) error {
	msg := make([]byte, 32)
	rand.Read(msg)
	sig, err := s.sign(sh, msg)
	if err != nil {
		return err
	}
	if !ed25519.Verify(s.pub, msg, sig) {
		return errors.New("a signature made in the token does not verify with its CKA_EC_POINT")
	}
	return nil
}
