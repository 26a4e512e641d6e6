package provider

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/custos-dev/custos/wire"
)

// HydraHook is what custos reads of an Ory Hydra token-hook request
// (oauth2.token_hook; https://www.ory.sh/docs/hydra/guides/claims-at-refresh):
// {"session": {"id_token": {"id_token_claims": {...}, "subject"}, "extra",
// "client_id", ...}, "request": {"client_id", "granted_scopes",
// "granted_audience", "grant_types", "payload"}}. Members custos does not
// read are allowed, as Hydra adds them over versions.
type HydraHook struct {
	Subject  string
	ClientID string
	Audience Audience
	// Extra are the access token's extra claims as the session holds them,
	// echoed in the answer: Hydra replaces them with what the hook returns.
	Extra map[string]json.RawMessage
	// IDTokenExtra are the ID token's extra claims (id_token_claims.ext),
	// echoed likewise.
	IDTokenExtra map[string]json.RawMessage
}

type hydraBody struct {
	Session *struct {
		IDToken *struct {
			Claims *struct {
				Sub string                     `json:"sub"`
				Ext map[string]json.RawMessage `json:"ext"`
			} `json:"id_token_claims"`
			Subject string `json:"subject"`
		} `json:"id_token"`
		Extra    map[string]json.RawMessage `json:"extra"`
		ClientID string                     `json:"client_id"`
	} `json:"session"`
	Request *struct {
		ClientID        string   `json:"client_id"`
		GrantedAudience []string `json:"granted_audience"`
		GrantTypes      []string `json:"grant_types"`
	} `json:"request"`
}

// ParseHydraHook reads a token-hook request body. The subject is the
// session's (id_token.subject, else id_token_claims.sub); for the
// client_credentials grant, which has no end user, it is the client, as in
// the tokens Hydra issues. Errors wrap ErrInvalid.
func ParseHydraHook(body []byte) (HydraHook, error) {
	if len(body) > MaxBody {
		return HydraHook{}, fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxBody)
	}
	if err := wire.CheckKeys(body); err != nil {
		return HydraHook{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var b hydraBody
	if err := json.Unmarshal(body, &b); err != nil {
		return HydraHook{}, fmt.Errorf("%w: bad JSON body: %v", ErrInvalid, err)
	}
	if b.Session == nil || b.Request == nil {
		return HydraHook{}, fmt.Errorf("%w: session and request are required", ErrInvalid)
	}
	h := HydraHook{ClientID: b.Request.ClientID, Audience: canonical(b.Request.GrantedAudience), Extra: b.Session.Extra}
	if h.ClientID == "" {
		h.ClientID = b.Session.ClientID
	}
	if b.Session.ClientID != "" && b.Session.ClientID != h.ClientID {
		return HydraHook{}, fmt.Errorf("%w: session and request name different clients", ErrInvalid)
	}
	if it := b.Session.IDToken; it != nil {
		h.Subject = it.Subject
		if it.Claims != nil {
			if h.Subject == "" {
				h.Subject = it.Claims.Sub
			}
			h.IDTokenExtra = it.Claims.Ext
		}
	}
	if h.Subject == "" && slices.Contains(b.Request.GrantTypes, "client_credentials") {
		h.Subject = h.ClientID
	}
	if h.ClientID == "" || h.Subject == "" {
		return HydraHook{}, fmt.Errorf("%w: no client or no subject", ErrInvalid)
	}
	return h, nil
}

// HydraAnswer is the hook's 200 body: the session's extra claims with
// custos_prv added, and the ID token's unchanged.
func (h *HydraHook) HydraAnswer(prv string) map[string]any {
	at := make(map[string]json.RawMessage, len(h.Extra)+1)
	for k, v := range h.Extra {
		at[k] = v
	}
	b, _ := json.Marshal(prv)
	at[PRVClaim] = b
	sess := map[string]any{"access_token": at}
	if len(h.IDTokenExtra) > 0 {
		sess["id_token"] = h.IDTokenExtra
	}
	return map[string]any{"session": sess}
}

// PRVClaim is the claim a provider puts custos's provenance id in.
const PRVClaim = "custos_prv"

// Record is the record of the token Hydra is about to issue for provider
// p at now: a fresh prv, exp = now + lifespan + skew.
func (h *HydraHook) Record(p *Config, prv string, now time.Time) Record {
	r := Record{Issuer: p.Issuer, PRV: prv, Subject: h.Subject, ClientID: h.ClientID,
		Exp: now.Add(p.AccessTokenLifespan + p.ClockSkew).UTC().Truncate(time.Second)}
	if p.BindsAudience() {
		r.Audience = h.Audience
	}
	return r
}

// KeycloakEvent is what custos reads of a Keycloak user event, posted in
// the JSON of Keycloak's EventRepresentation (the admin API's
// GET /admin/realms/{realm}/events shape: time, type, realmId, clientId,
// userId, sessionId, ipAddress, error, details) by an event listener.
type KeycloakEvent struct {
	Type      string
	Time      time.Time
	ClientID  string
	UserID    string
	IPAddress string
	TokenID   string // details.token_id: the access token's jti
	Error     string
}

type keycloakBody struct {
	Time      *int64            `json:"time"`
	Type      string            `json:"type"`
	RealmID   string            `json:"realmId"`
	ClientID  string            `json:"clientId"`
	UserID    string            `json:"userId"`
	SessionID string            `json:"sessionId"`
	IPAddress string            `json:"ipAddress"`
	Error     string            `json:"error"`
	Details   map[string]string `json:"details"`
}

// keycloakIssuing are the event types on which Keycloak issues an access
// token and reports its id in details.token_id.
var keycloakIssuing = []string{"CODE_TO_TOKEN", "CLIENT_LOGIN", "REFRESH_TOKEN", "TOKEN_EXCHANGE",
	"OAUTH2_DEVICE_CODE_TO_TOKEN", "AUTHREQID_TO_TOKEN"}

// ParseKeycloakEvent reads an event body. Members custos does not read
// are allowed. Errors wrap ErrInvalid.
func ParseKeycloakEvent(body []byte) (KeycloakEvent, error) {
	if len(body) > MaxBody {
		return KeycloakEvent{}, fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxBody)
	}
	if err := wire.CheckKeys(body); err != nil {
		return KeycloakEvent{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var b keycloakBody
	if err := json.Unmarshal(body, &b); err != nil {
		return KeycloakEvent{}, fmt.Errorf("%w: bad JSON body: %v", ErrInvalid, err)
	}
	if b.Type == "" || b.Time == nil || *b.Time <= 0 {
		return KeycloakEvent{}, fmt.Errorf("%w: type and time are required", ErrInvalid)
	}
	return KeycloakEvent{Type: b.Type, Time: time.UnixMilli(*b.Time).UTC(), ClientID: b.ClientID, UserID: b.UserID,
		IPAddress: b.IPAddress, TokenID: b.Details["token_id"], Error: b.Error}, nil
}

// Issues reports whether the event is an issuance to record.
func (e *KeycloakEvent) Issues() bool {
	return e.Error == "" && slices.Contains(keycloakIssuing, e.Type)
}

// Record is the record of the event's token for provider p: its jti, the
// user and client, exp = event time + lifespan + skew.
func (e *KeycloakEvent) Record(p *Config) Record {
	return Record{Issuer: p.Issuer, JTI: e.TokenID, Subject: e.UserID, ClientID: e.ClientID, ClientIP: e.IPAddress,
		Exp: e.Time.Add(p.AccessTokenLifespan + p.ClockSkew).Truncate(time.Second).Add(time.Second)}
}
