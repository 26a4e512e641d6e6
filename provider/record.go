package provider

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/wire"
)

// Errors of Recorder.Record and the parsers.
var (
	// ErrInvalid: the record or report is not acceptable (400, or 403 for
	// a hook whose client or subject custos refuses).
	ErrInvalid = errors.New("provider: invalid record")
	// ErrConflict: (iss, id) is recorded with other fields (409).
	ErrConflict = errors.New("provider: recorded with other fields")
	// ErrUnavailable: the ledger could not record (503); nothing may be
	// issued on it.
	ErrUnavailable = errors.New("provider: ledger unavailable")
)

// Audience is an aud as JWTs carry it: one string or a list of them. It is
// kept sorted and without repeats.
type Audience []string

// UnmarshalJSON reads a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	var list []string
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		list = []string{s}
	} else if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = canonical(list)
	return nil
}

func canonical(list []string) Audience {
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

// String is the space-separated form the ledger entry keeps.
func (a Audience) String() string { return strings.Join(a, " ") }

// ID kinds of a provider token's provenance key.
const (
	idJTI = "jti"
	idPRV = "prv"
)

// Record is what a provider reports of one token it issues.
type Record struct {
	Issuer   string
	JTI, PRV string // exactly one
	Subject  string
	Audience Audience // empty for a provider that binds none (keycloak)
	ClientID string
	Exp      time.Time
	KID      string // kept with the entry, not checked
	ClientIP string // where the provider saw the request, when it says
}

func (r *Record) id() (kind, id string) {
	if r.PRV != "" {
		return idPRV, r.PRV
	}
	return idJTI, r.JTI
}

// equal compares the fields a repeated record must repeat.
func (r *Record) equal(e *ledger.Entry) bool {
	kind, id := r.id()
	return e.JTI == kind+":"+id && e.Subject == r.Subject && e.Audience == r.Audience.String() &&
		e.Client == r.ClientID && e.ExpiresAt.Unix() == r.Exp.Unix() && e.KID == r.KID
}

// BindingKey is the ledger key a provider token is checked under: SHA-256
// over a domain tag and the length-prefixed iss, id kind, id, sub,
// client_id and (when bound) the sorted aud. A token that differs from its
// record in any of them has another key, which the ledger does not know.
// It cannot meet the key of a custos token (SHA-256 of its compact form,
// which never starts with the tag).
func BindingKey(iss, kind, id, sub, client string, aud Audience) ledger.Hash {
	return key("custos provider token v1", iss, kind, id, sub, client, aud.String())
}

// idKey is the ledger key of a record by (iss, id) alone, for idempotency.
func idKey(iss, kind, id string) ledger.Hash {
	return key("custos provider id v1", iss, kind, id)
}

func key(parts ...string) ledger.Hash {
	h := sha256.New()
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var out ledger.Hash
	h.Sum(out[:0])
	return out
}

// NewPRV returns a fresh provenance id: 128 random bits, base64url.
func NewPRV() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "prv_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// recordBody is the JSON of POST /v1/ledger/record.
type recordBody struct {
	Iss      *string   `json:"iss"`
	JTI      *string   `json:"jti"`
	PRV      *string   `json:"prv"`
	Sub      *string   `json:"sub"`
	Aud      *Audience `json:"aud"`
	ClientID *string   `json:"client_id"`
	Exp      *int64    `json:"exp"`
	KID      *string   `json:"kid"`
}

// MaxBody bounds the bodies of the record, hook and event endpoints.
const MaxBody = 64 << 10

// ParseRecord reads the body of POST /v1/ledger/record: one JSON object,
// members exactly iss, jti or prv (one of them), sub, aud (string or
// array; optional), client_id, exp (seconds), kid (optional); no other,
// none twice. Fields are checked by Recorder.Record against the provider.
func ParseRecord(body []byte) (Record, error) {
	if len(body) > MaxBody {
		return Record{}, fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxBody)
	}
	var b recordBody
	if err := wire.Unmarshal(body, &b); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	switch {
	case b.Iss == nil, b.Sub == nil, b.ClientID == nil, b.Exp == nil:
		return Record{}, fmt.Errorf("%w: iss, sub, client_id and exp are required", ErrInvalid)
	case (b.JTI == nil) == (b.PRV == nil):
		return Record{}, fmt.Errorf("%w: exactly one of jti and prv is required", ErrInvalid)
	}
	r := Record{Issuer: *b.Iss, JTI: str(b.JTI), PRV: str(b.PRV), Subject: *b.Sub, ClientID: *b.ClientID,
		KID: str(b.KID), Exp: time.Unix(*b.Exp, 0).UTC()}
	if b.Aud != nil {
		r.Audience = *b.Aud
		if len(r.Audience) == 0 {
			return Record{}, fmt.Errorf("%w: aud is an empty list", ErrInvalid)
		}
	}
	if r.Issuer == "" {
		return Record{}, fmt.Errorf("%w: iss is empty", ErrInvalid)
	}
	return r, nil
}

// check validates r for provider p at now.
func (r *Record) check(p *Config, now time.Time) error {
	_, id := r.id()
	switch {
	case r.Issuer != p.Issuer:
		return fmt.Errorf("%w: iss is not provider %s's", ErrInvalid, p.Name)
	case len(id) < 8 || !printable(id, maxField):
		return fmt.Errorf("%w: jti/prv must be 8 to %d printable ASCII bytes", ErrInvalid, maxField)
	case !printable(r.Subject, maxField):
		return fmt.Errorf("%w: sub must be 1 to %d printable ASCII bytes without spaces", ErrInvalid, maxField)
	case !printable(r.ClientID, maxField):
		return fmt.Errorf("%w: client_id must be 1 to %d printable ASCII bytes without spaces", ErrInvalid, maxField)
	case r.KID != "" && !printable(r.KID, maxField):
		return fmt.Errorf("%w: kid is not printable ASCII", ErrInvalid)
	case !r.Exp.After(now):
		return fmt.Errorf("%w: exp is not in the future", ErrInvalid)
	case r.Exp.Sub(now) > MaxLifespan+p.ClockSkew:
		return fmt.Errorf("%w: exp more than %s ahead", ErrInvalid, MaxLifespan)
	case p.BindsAudience() && len(r.Audience) == 0:
		return fmt.Errorf("%w: aud is required (provider %s binds it)", ErrInvalid, p.Name)
	case !p.BindsAudience() && len(r.Audience) != 0:
		return fmt.Errorf("%w: provider %s (kind %s) records no aud", ErrInvalid, p.Name, p.Kind)
	case len(p.Clients) > 0 && !slices.Contains(p.Clients, r.ClientID):
		return fmt.Errorf("%w: client %q is not one of provider %s's", ErrInvalid, r.ClientID, p.Name)
	}
	for _, a := range r.Audience {
		if !printable(a, maxField) {
			return fmt.Errorf("%w: aud entries must be printable ASCII without spaces", ErrInvalid)
		}
	}
	return nil
}

// Ledger is where records go (ledger.Ledger).
type Ledger interface {
	Put(ctx context.Context, e ledger.Entry) error
	Get(ctx context.Context, h ledger.Hash) (ledger.Entry, error)
}

// Recorder writes provider records to the ledger.
type Recorder struct {
	Ledger Ledger
	Now    func() time.Time
	// Recorded, when set, hears of each new record (detection, audit).
	Recorded func(ctx context.Context, p *Config, r Record)

	mu sync.Mutex // serialises this process's records, for idempotency
}

// Record checks r against p and records it: two entries, one under the
// binding key gateways check and one under (iss, id) for idempotency. It
// reports whether the record is new; a repeat with equal fields is not an
// error, one with other fields is ErrConflict.
func (rc *Recorder) Record(ctx context.Context, p *Config, r Record) (created bool, err error) {
	now := rc.Now()
	if err := r.check(p, now); err != nil {
		return false, err
	}
	kind, id := r.id()
	idk := idKey(r.Issuer, kind, id)
	e := ledger.Entry{JTI: kind + ":" + id, KID: r.KID, Subject: r.Subject, Audience: r.Audience.String(),
		Client: r.ClientID, ClientIP: r.ClientIP, IssuedAt: now.UTC().Truncate(time.Second), ExpiresAt: r.Exp}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	prev, err := rc.Ledger.Get(ctx, idk)
	switch {
	case err == nil:
		if !r.equal(&prev) {
			return false, ErrConflict
		}
		return false, nil
	case !errors.Is(err, ledger.ErrNotFound):
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	bound := r.Audience
	if !p.BindsAudience() {
		bound = nil
	}
	e.Hash = BindingKey(r.Issuer, kind, id, r.Subject, r.ClientID, bound)
	// The binding first: a failure after it leaves no (iss, id) entry, so
	// the retry records both.
	if err := rc.Ledger.Put(ctx, e); err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	e.Hash = idk
	if err := rc.Ledger.Put(ctx, e); err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if rc.Recorded != nil {
		rc.Recorded(ctx, p, r)
	}
	return true, nil
}
