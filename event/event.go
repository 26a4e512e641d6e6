// Package event defines the access event, the one record the gateway emits per
// request and that detection, forensics and audit consume, and the refusal reasons.
//
// Field names are a contract (see docs/DESIGN.md): black-box tests and foreign
// consumers read them.
package event

import "time"

// Verdict is the gateway's decision for a request.
type Verdict string

const (
	Allow Verdict = "allow"
	Deny  Verdict = "deny"
)

// Reason names why a request was refused. The values are the contract strings
// used in events, metrics and the gateway's error_description.
type Reason string

const (
	ReasonNone              Reason = ""
	ReasonMissingToken      Reason = "missing_token"
	ReasonMalformed         Reason = "malformed"
	ReasonBadSignature      Reason = "bad_signature"
	ReasonUnknownKey        Reason = "unknown_key"
	ReasonRevokedKey        Reason = "revoked_key"
	ReasonExpired           Reason = "expired"
	ReasonNotYetValid       Reason = "not_yet_valid"
	ReasonWrongAudience     Reason = "wrong_audience"
	ReasonWrongIssuer       Reason = "wrong_issuer"
	ReasonNotIssued         Reason = "not_issued"
	ReasonRevokedToken      Reason = "revoked_token"
	ReasonSubjectMismatch   Reason = "subject_mismatch"
	ReasonDecoySubject      Reason = "decoy_subject"
	ReasonLedgerUnavailable Reason = "ledger_unavailable"
	ReasonBlockedSource     Reason = "blocked_source"
	ReasonUnknownRoute      Reason = "unknown_route"
	// ReasonDPoPRequired: the token is bound to a key (cnf.jkt) and came
	// without a DPoP proof, or under the Bearer scheme.
	ReasonDPoPRequired Reason = "dpop_required"
	// ReasonBadDPoPProof: a DPoP proof that is invalid, for another request
	// or key, replayed, or without the server's current nonce.
	ReasonBadDPoPProof Reason = "bad_dpop_proof"
)

// Reasons lists every refusal reason, in the gateway's check order.
var Reasons = []Reason{
	ReasonMissingToken, ReasonMalformed, ReasonUnknownKey, ReasonRevokedKey,
	ReasonBadSignature, ReasonExpired, ReasonNotYetValid, ReasonWrongIssuer,
	ReasonWrongAudience, ReasonNotIssued, ReasonRevokedToken, ReasonSubjectMismatch,
	ReasonDecoySubject, ReasonLedgerUnavailable, ReasonBlockedSource, ReasonUnknownRoute,
	ReasonDPoPRequired, ReasonBadDPoPProof,
}

// Token is the part of a token's claims an access event carries. The token
// itself is never recorded.
type Token struct {
	JTI string `json:"jti,omitempty"`
	KID string `json:"kid,omitempty"`
	Sub string `json:"sub,omitempty"`
	Aud string `json:"aud,omitempty"`
	IAT int64  `json:"iat,omitempty"`
	EXP int64  `json:"exp,omitempty"`
}

// Access is one request seen by a gateway, allowed or refused.
type Access struct {
	Time        time.Time `json:"time"`
	Gateway     string    `json:"gateway"`
	RequestID   string    `json:"request_id"`
	Method      string    `json:"method"`
	Route       string    `json:"route"`
	Path        string    `json:"path"`
	Status      int       `json:"status"`
	Bytes       int64     `json:"bytes"`
	LatencyUS   int64     `json:"latency_us"`
	SrcIP       string    `json:"src_ip"`
	Country     string    `json:"country"`
	ASN         uint32    `json:"asn"`
	UserAgent   string    `json:"user_agent"`
	Token       Token     `json:"token"`
	Verdict     Verdict   `json:"verdict"`
	Reason      Reason    `json:"reason"`
	Subject     string    `json:"subject"`
	DataClasses []string  `json:"data_classes"`
	// Reported is empty when a custos gateway saw the request and made the
	// checks itself, and ReportedLog when custos read the event from a log
	// (POST /v1/events, custos ingest): its verdict, reason and token fields
	// are then the log's claims, weaker evidence than a gateway's own check.
	Reported string `json:"reported,omitempty"`
}

// ReportedLog marks an access event read from a log rather than seen by a
// custos gateway.
const ReportedLog = "log"

// Data classes a route's answer can carry.
const (
	ClassName         = "name"
	ClassEmail        = "email"
	ClassPhone        = "phone"
	ClassAddress      = "address"
	ClassEntranceCode = "entrance_code"
	ClassOrderHistory = "order_history"
)
