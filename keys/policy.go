package keys

import (
	"errors"
	"fmt"
	"time"
)

// Policy defaults and hard limits. A zero field in Policy takes its default.
const (
	DefaultRotateEvery  = 24 * time.Hour     // a new active key every day
	DefaultMaxTokenTTL  = 15 * time.Minute   // longest token the authority issues
	HardMaxTokenTTL     = 24 * time.Hour     // no policy may allow longer tokens
	DefaultMaxKeyAge    = 7 * 24 * time.Hour // a key this old never signs again
	HardMaxKeyAge       = 7 * 24 * time.Hour // no policy may allow older signing keys
	DefaultRetireLeeway = 5 * time.Minute    // clock skew allowance before a verify-only key retires
	DefaultAlg          = EdDSA
)

// ErrPolicy is wrapped by Policy.Validate errors.
var ErrPolicy = errors.New("keys: invalid policy")

// Policy is the key lifecycle schedule.
type Policy struct {
	// RotateEvery is how long a key stays active before a new one replaces it.
	RotateEvery time.Duration `yaml:"rotate_every" json:"rotate_every"`
	// MaxTokenTTL is the longest token lifetime; a demoted key keeps verifying
	// for MaxTokenTTL+RetireLeeway, then retires. At most HardMaxTokenTTL.
	MaxTokenTTL time.Duration `yaml:"max_token_ttl" json:"max_token_ttl"`
	// MaxKeyAge is the hard age limit after which a key never signs, even if
	// rotation is failing. At most HardMaxKeyAge.
	MaxKeyAge time.Duration `yaml:"max_key_age" json:"max_key_age"`
	// RetireLeeway allows for clock skew between issuers and verifiers.
	RetireLeeway time.Duration `yaml:"retire_leeway" json:"retire_leeway"`
	// Alg is the algorithm of new keys.
	Alg Alg `yaml:"alg" json:"alg"`
}

// DefaultPolicy returns the documented defaults.
func DefaultPolicy() Policy {
	return Policy{
		RotateEvery:  DefaultRotateEvery,
		MaxTokenTTL:  DefaultMaxTokenTTL,
		MaxKeyAge:    DefaultMaxKeyAge,
		RetireLeeway: DefaultRetireLeeway,
		Alg:          DefaultAlg,
	}
}

// WithDefaults returns p with every zero field set to its default.
func (p Policy) WithDefaults() Policy {
	d := DefaultPolicy()
	if p.RotateEvery == 0 {
		p.RotateEvery = d.RotateEvery
	}
	if p.MaxTokenTTL == 0 {
		p.MaxTokenTTL = d.MaxTokenTTL
	}
	if p.MaxKeyAge == 0 {
		p.MaxKeyAge = d.MaxKeyAge
	}
	if p.RetireLeeway == 0 {
		p.RetireLeeway = d.RetireLeeway
	}
	if p.Alg == "" {
		p.Alg = d.Alg
	}
	return p
}

// Validate checks p (after defaults) and names the offending field.
func (p Policy) Validate() error {
	switch {
	case p.RotateEvery <= 0:
		return fmt.Errorf("%w: rotate_every must be positive", ErrPolicy)
	case p.MaxTokenTTL <= 0 || p.MaxTokenTTL > HardMaxTokenTTL:
		return fmt.Errorf("%w: max_token_ttl %s not in (0, %s]", ErrPolicy, p.MaxTokenTTL, HardMaxTokenTTL)
	case p.MaxKeyAge <= 0 || p.MaxKeyAge > HardMaxKeyAge:
		return fmt.Errorf("%w: max_key_age %s not in (0, %s]", ErrPolicy, p.MaxKeyAge, HardMaxKeyAge)
	case p.RotateEvery > p.MaxKeyAge:
		return fmt.Errorf("%w: rotate_every %s exceeds max_key_age %s", ErrPolicy, p.RotateEvery, p.MaxKeyAge)
	case p.RetireLeeway < 0:
		return fmt.Errorf("%w: retire_leeway must not be negative", ErrPolicy)
	case p.Alg != EdDSA && p.Alg != ES256 && p.Alg != RS256:
		return fmt.Errorf("%w: alg %q is not EdDSA, ES256 or RS256", ErrPolicy, p.Alg)
	}
	return nil
}
