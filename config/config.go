// Package config is custos's configuration: one documented struct tree, read
// from a YAML file, then CUSTOS_* environment variables, then flags (each
// stronger than the one before), and validated as a whole with errors that
// name the field.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/custos-dev/custos/internal/clientaddr"
	"github.com/custos-dev/custos/provider"
)

// Defaults.
const (
	DefaultListen        = "127.0.0.1:7700"
	DefaultGatewayListen = "127.0.0.1:7780"
	DefaultAudience      = "shop-api"
	DefaultRotateEvery   = 24 * time.Hour
	DefaultMaxTokenTTL   = 15 * time.Minute
	DefaultMaxKeyAge     = 7 * 24 * time.Hour
	MaxConfigBytes       = 1 << 20
)

// Config is the whole configuration. Field comments are the user documentation.
type Config struct {
	// Data is the data directory (keyring, databases, audit log, event store).
	Data string `yaml:"data" env:"CUSTOS_DATA"`
	// Listen is the API address.
	Listen string `yaml:"listen" env:"CUSTOS_LISTEN"`
	// TrustedProxies are the CIDRs of the load balancers or reverse proxies
	// in front of Listen whose X-Forwarded-For is believed: the token
	// endpoints' caller (issuance events, issuance detection) is the
	// right-most hop none of them owns. Empty: the peer address. A prefix
	// of length 0 (0.0.0.0/0, ::/0) is refused.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Issuer is the iss claim and the base URL in the metadata document.
	// Empty: http://LISTEN (a wildcard host becomes 127.0.0.1, with a
	// warning from serve); see CheckIssuer for the forms serve refuses.
	Issuer string `yaml:"issuer" env:"CUSTOS_ISSUER"`
	// Keys: custody backend and lifecycle policy.
	Keys Keys `yaml:"keys"`
	// Tokens: issuance policy.
	Tokens Tokens `yaml:"tokens"`
	// Decoys: member IDs that belong to no real customer.
	Decoys []string `yaml:"decoys"`
	// Gateway runs in-process in serve when Upstream is set, and is the
	// configuration of `custos gateway`.
	Gateway Gateway `yaml:"gateway"`
	// Staff: workforce lifecycle.
	Staff Staff `yaml:"staff"`
	// Detect: detection engine.
	Detect Detect `yaml:"detect"`
	// Role is which parts this process runs: all (default), authority,
	// gateway, detector or forensics. Roles other than all find each other
	// through the bus (Scale.NATS).
	Role string `yaml:"role" env:"CUSTOS_ROLE"`
	// Scale names the existing engines of a scale-out deployment. Each is
	// optional; empty means the embedded default.
	Scale Scale `yaml:"scale"`
	// Telemetry: traces (off by default).
	Telemetry Telemetry `yaml:"telemetry"`
	// OAuth: the standard token endpoint (POST /oauth2/token).
	OAuth OAuth `yaml:"oauth"`
	// Providers are identity providers the shop keeps for issuance
	// (Keycloak, Ory Hydra, Auth0, or any issuer through a webhook): each
	// records what it issues in the ledger, and gateways accept its tokens
	// only when recorded (see docs/DESIGN.md, "Provenance for an identity
	// provider the shop keeps").
	Providers []Provider `yaml:"providers"`
}

// Provider is one identity provider whose tokens gateways accept once it
// has recorded them.
type Provider struct {
	// Name names it in credentials (--role issuer --provider NAME) and
	// endpoints (/v1/providers/NAME/...).
	Name string `yaml:"name"`
	// Issuer is its iss, compared exactly.
	Issuer string `yaml:"issuer"`
	// JWKSURL is where it publishes its signing keys (https; http only on
	// a loopback address); EdDSA, ES256 and RS256 keys are used.
	JWKSURL string `yaml:"jwks_url"`
	// Audience must be in the aud of its tokens a gateway accepts.
	Audience string `yaml:"audience"`
	// Kind is keycloak, hydra, auth0 or webhook: how it records.
	Kind string `yaml:"kind"`
	// AccessTokenLifespan is its access-token lifetime (kinds hydra and
	// keycloak, required: their reports carry no exp).
	AccessTokenLifespan time.Duration `yaml:"access_token_lifespan"`
	// ClockSkew between its clock and custos's (0: 30s; at most 5m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// Clients, when not empty, are the only client_ids it may record.
	Clients []string `yaml:"clients"`
}

// ProviderConfigs maps the providers to package provider's configuration.
func (c *Config) ProviderConfigs() []provider.Config {
	out := make([]provider.Config, 0, len(c.Providers))
	for _, p := range c.Providers {
		out = append(out, provider.Config{Name: p.Name, Issuer: p.Issuer, JWKSURL: p.JWKSURL, Audience: p.Audience,
			Kind: provider.Kind(p.Kind), AccessTokenLifespan: p.AccessTokenLifespan, ClockSkew: p.ClockSkew,
			Clients: p.Clients})
	}
	return out
}

// OAuth configures the standard token endpoint.
type OAuth struct {
	// ExternalIssuers are identity providers whose ID tokens the token
	// exchange (RFC 8693) accepts in return for a custos access token.
	ExternalIssuers []ExternalIssuer `yaml:"external_issuers"`
	// DPoPNonce makes the token endpoint require a server nonce in every
	// DPoP proof (RFC 9449 section 8): a proof without the current one is
	// answered use_dpop_nonce with a fresh nonce in DPoP-Nonce.
	DPoPNonce bool `yaml:"dpop_nonce" env:"CUSTOS_OAUTH_DPOP_NONCE"`
	// DPoPNoncePeriod is how long one nonce is handed out; a nonce is
	// accepted in the period it was issued in and the next, so for at most
	// twice this long (0: 1m; 1s to 1h).
	DPoPNoncePeriod time.Duration `yaml:"dpop_nonce_period"`
	// DPoPNonceSecretEnv names an environment variable holding the nonces'
	// HMAC secret (base64, at least 32 bytes), the same on every authority
	// replica so that each accepts the others' nonces. Empty: a secret of
	// this process's own.
	DPoPNonceSecretEnv string `yaml:"dpop_nonce_secret_env"`
}

// MinDPoPNoncePeriod and MaxDPoPNoncePeriod bound oauth.dpop_nonce_period.
const (
	MinDPoPNoncePeriod = time.Second
	MaxDPoPNoncePeriod = time.Hour
)

// ExternalIssuer is one identity provider the token exchange trusts.
type ExternalIssuer struct {
	// Issuer is its iss, compared exactly.
	Issuer string `yaml:"issuer"`
	// JWKSURL is where it publishes its signing keys (https; http only on
	// a loopback address).
	JWKSURL string `yaml:"jwks_url"`
	// Audience must be in the ID token's aud (the login service's
	// client_id at the provider).
	Audience string `yaml:"audience"`
	// ClockSkew allowed on exp, iat and nbf (0: 30s; at most 5m).
	ClockSkew time.Duration `yaml:"clock_skew"`
	// SubjectClaim is the claim holding the member id (empty: sub).
	SubjectClaim string `yaml:"subject_claim"`
	// Algorithms allowed (empty: RS256, ES256 and EdDSA).
	Algorithms []string `yaml:"algorithms"`
}

// Telemetry configures OpenTelemetry traces of issuance and the gateway.
type Telemetry struct {
	// OTLPEndpoint is the OTLP/HTTP collector traces go to, such as
	// http://127.0.0.1:4318 (empty: no traces).
	OTLPEndpoint string `yaml:"otlp_endpoint" env:"CUSTOS_OTLP_ENDPOINT"`
	// SampleRatio is the share of new traces recorded, 0 to 1 (default 1);
	// a request that arrives with a sampled trace parent is always recorded.
	SampleRatio float64 `yaml:"sample_ratio"`
}

// Scale configures the scale-out backends.
type Scale struct {
	// Store is the control-plane database: a postgres:// URL (default: SQLite in DATA).
	Store string `yaml:"store" env:"CUSTOS_STORE"`
	// Redis is the issuance ledger's Redis URL, redis://host:port/db, Redis 7.0 or newer (default: SQLite in DATA),
	// or a comma-separated list of them: the ledger's shards, each token on the one its hash picks
	// (RedisURLs). The list's length and order are part of the ledger: changing them needs a migration.
	Redis string `yaml:"redis" env:"CUSTOS_REDIS"`
	// Audit is the deployment's one audit log, shared by every replica:
	// mysql://user[:password]@host[:port]/database (MySQL or MariaDB,
	// through Tessera's MySQL driver). Default: a log of its own in DATA/audit.
	// It needs keys.keyring: store, so that replicas share the checkpoint key.
	Audit string `yaml:"audit" env:"CUSTOS_AUDIT"`
	// NATS is the event bus URL (default: in-process).
	NATS string `yaml:"nats" env:"CUSTOS_NATS"`
	// Partitions of the access-event stream (default 8).
	Partitions int `yaml:"partitions"`
	// Prefix of the bus's subjects and streams (default custos).
	Prefix string `yaml:"prefix" env:"CUSTOS_NATS_PREFIX"`
	// Instance and Instances: this detector's share of the partitions.
	// CUSTOS_SCALE_INSTANCE lets a StatefulSet give each pod its ordinal.
	Instance  int `yaml:"instance" env:"CUSTOS_SCALE_INSTANCE"`
	Instances int `yaml:"instances" env:"CUSTOS_SCALE_INSTANCES"`
}

// Keys configures key custody and the key lifecycle policy.
type Keys struct {
	// Backend is "sealed" (default) or "pkcs11".
	Backend string `yaml:"backend" env:"CUSTOS_KEYS_BACKEND"`
	// Keyring is where the sealed keyring lives: "file" (default,
	// DATA/keyring.sealed) or "store" (the control-plane PostgreSQL
	// database, scale.store, shared by every authority replica; the KEK must
	// then come from kek_env, passphrase_env or a kek_file outside DATA).
	Keyring string `yaml:"keyring" env:"CUSTOS_KEYRING"`
	// Alg is "EdDSA" (default), "ES256" or "RS256" (2048-bit RSA, for
	// resource servers that verify only RS256). With the pkcs11 backend,
	// EdDSA needs a token that lists CKM_EDDSA and CKM_EC_EDWARDS_KEY_PAIR_GEN.
	Alg string `yaml:"alg" env:"CUSTOS_KEYS_ALG"`
	// KEKFile is a file holding the 32-byte key-encryption key of the sealed
	// keyring; default DATA/kek (created 0600 on first start).
	KEKFile string `yaml:"kek_file" env:"CUSTOS_KEK_FILE"`
	// KEKEnv names an environment variable holding the KEK (base64) instead.
	KEKEnv string `yaml:"kek_env" env:"CUSTOS_KEK_ENV"`
	// PassphraseEnv names an environment variable holding a passphrase the KEK
	// is derived from with argon2id instead.
	PassphraseEnv string `yaml:"passphrase_env" env:"CUSTOS_KEK_PASSPHRASE_ENV"`
	// PKCS11 configures the HSM backend.
	PKCS11 PKCS11 `yaml:"pkcs11"`
	// RotateEvery: a new active key this often (default 24h).
	RotateEvery time.Duration `yaml:"rotate_every" env:"CUSTOS_ROTATE_EVERY"`
	// MaxKeyAge: a key past this age never signs again (default and hard max 7 days).
	MaxKeyAge time.Duration `yaml:"max_key_age" env:"CUSTOS_MAX_KEY_AGE"`
}

// PKCS11 configures the HSM backend.
type PKCS11 struct {
	Module     string `yaml:"module" env:"CUSTOS_PKCS11_MODULE"`
	TokenLabel string `yaml:"token_label" env:"CUSTOS_PKCS11_TOKEN"`
	// PINEnv names the environment variable holding the user PIN.
	PINEnv string `yaml:"pin_env" env:"CUSTOS_PKCS11_PIN_ENV"`
}

// Tokens configures issuance.
type Tokens struct {
	DefaultTTL time.Duration `yaml:"default_ttl" env:"CUSTOS_TOKEN_TTL"`
	// MaxTTL: the longest token lifetime (default 15m, hard max 24h).
	MaxTTL time.Duration `yaml:"max_ttl" env:"CUSTOS_TOKEN_MAX_TTL"`
}

// Route is one customer-data route behind the gateway: what a path carries
// and whose data it is. The gateway takes it as is (gateway.Route).
type Route struct {
	// Pattern is a net/http ServeMux pattern, e.g.
	// "GET /api/members/{memberId}/addresses". A pattern with a method also
	// binds the other methods on the same path, so changing the method does
	// not escape subject binding.
	Pattern string `yaml:"pattern"`
	// DataClasses the answer carries (event.ClassName, event.ClassAddress, …).
	DataClasses []string `yaml:"data_classes"`
	// SubjectParam names the wildcard that holds the member whose data this
	// is; it must equal the token's sub. Empty: no binding.
	SubjectParam string `yaml:"subject_param"`
}

// Gateway configures the verifying gateway.
type Gateway struct {
	// Name identifies this gateway in access events.
	Name     string `yaml:"name" env:"CUSTOS_GATEWAY_NAME"`
	Upstream string `yaml:"upstream" env:"CUSTOS_GATEWAY_UPSTREAM"`
	Listen   string `yaml:"listen" env:"CUSTOS_GATEWAY_LISTEN"`
	// AdminListen is where a standalone gateway serves /healthz, /readyz
	// and /metrics (never on Listen); empty means not served.
	AdminListen string `yaml:"admin_listen" env:"CUSTOS_GATEWAY_ADMIN_LISTEN"`
	// Decide serves the decision API (GET /v1/decide, ANY /ext_authz/...)
	// on Listen instead of proxying: the shop's own proxy forwards.
	Decide bool `yaml:"decide" env:"CUSTOS_GATEWAY_DECIDE"`
	// GRPCListen, with Decide, serves Envoy's ext_authz gRPC service
	// (envoy.service.auth.v3.Authorization) on this address.
	GRPCListen string `yaml:"grpc_listen" env:"CUSTOS_GATEWAY_GRPC_LISTEN"`
	// MaxStale is how long a standalone gateway whose authority is out of
	// reach keeps serving tokens it saw issued (unseen ones are refused).
	MaxStale time.Duration `yaml:"max_stale" env:"CUSTOS_GATEWAY_MAX_STALE"`
	// Authority is the authority's URL, or a comma-separated list of its
	// replicas' URLs that a standalone gateway fails over between.
	Authority string        `yaml:"authority" env:"CUSTOS_AUTHORITY"`
	Audience  []string      `yaml:"audience"`
	Leeway    time.Duration `yaml:"leeway" env:"CUSTOS_GATEWAY_LEEWAY"`
	Routes    []Route       `yaml:"routes"`
	// Unmatched is what happens to a path that matches no route when routes
	// are configured: deny (default, reason unknown_route) or forward.
	Unmatched string `yaml:"unmatched" env:"CUSTOS_GATEWAY_UNMATCHED"`
	// Observe lists checks (reasons) that only report instead of refusing.
	Observe []string `yaml:"observe"`
	// GeoIP lists MaxMind-format databases (country and ASN).
	GeoIP []string `yaml:"geoip"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed.
	TrustedProxies []string `yaml:"trusted_proxies"`
	EventsFile     string   `yaml:"events_file" env:"CUSTOS_EVENTS_FILE"`
	// AuthorityTokenFile holds the gateway credential (custos credentials add
	// NAME --role gateway) the gateway uses on the authority's ledger stream,
	// lookups and POST /v1/events (default: DATA/gateway-token, then
	// DATA/admin-token, with a warning, when present).
	AuthorityTokenFile string `yaml:"authority_token_file" env:"CUSTOS_AUTHORITY_TOKEN_FILE"`
	// AuthorityToken is that credential itself, from the environment only
	// (never from the YAML file); it wins over AuthorityTokenFile.
	AuthorityToken string `yaml:"-" env:"CUSTOS_GATEWAY_TOKEN"`
	// DPoP: how proofs for key-bound tokens (cnf.jkt) are checked.
	DPoP GatewayDPoP `yaml:"dpop"`
}

// GatewayDPoP configures the checking of DPoP proofs (RFC 9449).
type GatewayDPoP struct {
	// PublicURL is the scheme and host clients address the API by, such as
	// https://api.shop.example: a proof's htu must name it. Empty: the
	// request's own Host and scheme (TLS, or X-Forwarded-Proto from a
	// trusted proxy or the decision API's caller).
	PublicURL string `yaml:"public_url" env:"CUSTOS_GATEWAY_DPOP_PUBLIC_URL"`
	// Window bounds how far a proof's iat may be from the gateway's clock
	// (0: 1m, at most 5m).
	Window time.Duration `yaml:"window"`
	// ReplayCacheSize bounds the proofs one gateway remembers when
	// scale.redis is not set (0: 1000000); past it proofs are refused.
	// With scale.redis the replicas share the cache there.
	ReplayCacheSize int `yaml:"replay_cache_size"`
	// Nonce makes every proof carry a server nonce (DPoP-Nonce).
	Nonce bool `yaml:"nonce" env:"CUSTOS_GATEWAY_DPOP_NONCE"`
	// NonceSecretEnv names an environment variable holding the nonces' HMAC
	// secret (base64, at least 32 bytes), the same on every replica.
	// Empty: a secret of this process's own.
	NonceSecretEnv string `yaml:"nonce_secret_env"`
}

// Staff configures the workforce lifecycle.
type Staff struct {
	// OffboardGrace: when true a departed custodian's old key stays
	// verify-only until the max token TTL instead of being revoked at once.
	OffboardGrace bool `yaml:"offboard_grace" env:"CUSTOS_OFFBOARD_GRACE"`
	// KeyAdminGroup: members are custodians of every signing key.
	KeyAdminGroup string `yaml:"key_admin_group"`
}

// Detect configures detection.
type Detect struct {
	// Rules is a YAML file of CEL rules.
	Rules string `yaml:"rules" env:"CUSTOS_RULES"`
	// AllowedCountries for the foreign_origin detector (default KR).
	AllowedCountries []string `yaml:"allowed_countries"`
	// Contain enables automatic containment; DryRun records without acting.
	Contain bool `yaml:"contain" env:"CUSTOS_CONTAIN"`
	DryRun  bool `yaml:"dry_run" env:"CUSTOS_CONTAIN_DRY_RUN"`
	// BlockFor is how long containment blocks a source (at most 7 days).
	BlockFor time.Duration `yaml:"block_for"`
	// CountryBlockFor is how long containment blocks a country outside
	// AllowedCountries from which the data of many customers was read with
	// tokens that passed every check (foreign_spread; at most 7 days).
	CountryBlockFor time.Duration `yaml:"country_block_for"`
	// ContainmentLimits bounds the containment actions taken per kind and
	// window; beyond it an action is not taken and an alert is raised.
	ContainmentLimits ContainmentLimits `yaml:"containment_limits"`
	// Webhook receives alerts (HMAC-signed with the secret in WebhookSecretEnv).
	Webhook          string `yaml:"webhook" env:"CUSTOS_WEBHOOK"`
	WebhookSecretEnv string `yaml:"webhook_secret_env" env:"CUSTOS_WEBHOOK_SECRET_ENV"`
	// Slack is a Slack-compatible incoming-webhook URL for alerts.
	Slack string `yaml:"slack" env:"CUSTOS_SLACK"`
	// Syslog is host:port of an RFC 5424 syslog receiver.
	Syslog string `yaml:"syslog" env:"CUSTOS_SYSLOG"`
	// SyslogNetwork is udp (default), tcp or tls (RFC 5425).
	SyslogNetwork string `yaml:"syslog_network" env:"CUSTOS_SYSLOG_NETWORK"`
	// SyslogCAFile holds the PEM CAs of a tls receiver (default: system roots).
	SyslogCAFile string `yaml:"syslog_ca_file" env:"CUSTOS_SYSLOG_CA_FILE"`
	// SyslogFormat of the message body: native or ocsf.
	SyslogFormat string `yaml:"syslog_format" env:"CUSTOS_SYSLOG_FORMAT"`
	// SyslogEvents sends access events to syslog as well as alerts.
	SyslogEvents bool `yaml:"syslog_events" env:"CUSTOS_SYSLOG_EVENTS"`
	// AlertsFile appends every alert as a JSON line.
	AlertsFile string `yaml:"alerts_file" env:"CUSTOS_ALERTS_FILE"`
	// AlertsFileFormat is native or ocsf.
	AlertsFileFormat string `yaml:"alerts_file_format" env:"CUSTOS_ALERTS_FILE_FORMAT"`
	// Splunk sends alerts (and access events) to an HTTP Event Collector.
	Splunk Splunk `yaml:"splunk"`
	// PagerDuty pages on severe alerts through the Events API v2.
	PagerDuty PagerDuty `yaml:"pagerduty"`
}

// Splunk configures the Splunk HTTP Event Collector sink.
type Splunk struct {
	// URL of the collector (https://splunk.example:8088); empty: off.
	URL string `yaml:"url" env:"CUSTOS_SPLUNK_URL"`
	// TokenEnv names the environment variable holding the HEC token.
	TokenEnv string `yaml:"token_env" env:"CUSTOS_SPLUNK_TOKEN_ENV"`
	Index    string `yaml:"index" env:"CUSTOS_SPLUNK_INDEX"`
	// Format is native or ocsf.
	Format string `yaml:"format" env:"CUSTOS_SPLUNK_FORMAT"`
	// Events sends access events as well as alerts.
	Events bool `yaml:"events" env:"CUSTOS_SPLUNK_EVENTS"`
	// Acks waits for indexer acknowledgement, resending what is not indexed.
	Acks bool `yaml:"acks" env:"CUSTOS_SPLUNK_ACKS"`
}

// PagerDuty configures the PagerDuty Events API v2 sink.
type PagerDuty struct {
	// RoutingKeyEnv names the environment variable holding the integration
	// key; empty: off.
	RoutingKeyEnv string `yaml:"routing_key_env" env:"CUSTOS_PAGERDUTY_ROUTING_KEY_ENV"`
	// URL of the Events API (default https://events.pagerduty.com).
	URL string `yaml:"url" env:"CUSTOS_PAGERDUTY_URL"`
	// MinSeverity pages only alerts at or above it (default high).
	MinSeverity string `yaml:"min_severity" env:"CUSTOS_PAGERDUTY_MIN_SEVERITY"`
}

// ContainmentLimits is one RateLimit per containment action.
type ContainmentLimits struct {
	RevokeKey     RateLimit `yaml:"revoke_key"`
	RevokeToken   RateLimit `yaml:"revoke_token"`
	ForceRelogin  RateLimit `yaml:"force_relogin"`
	BlockSource   RateLimit `yaml:"block_source"`
	SuspendClient RateLimit `yaml:"suspend_client"`
	BlockCountry  RateLimit `yaml:"block_country"`
}

// RateLimit allows Max actions per Per (Max 0: no limit).
type RateLimit struct {
	Max int           `yaml:"max"`
	Per time.Duration `yaml:"per"`
}

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Listen:  DefaultListen,
		Keys:    Keys{Backend: "sealed", Alg: "EdDSA", RotateEvery: DefaultRotateEvery, MaxKeyAge: DefaultMaxKeyAge},
		Tokens:  Tokens{DefaultTTL: 5 * time.Minute, MaxTTL: DefaultMaxTokenTTL},
		Gateway: Gateway{Listen: DefaultGatewayListen, Audience: []string{DefaultAudience}, Leeway: 30 * time.Second, MaxStale: 30 * time.Second},
		Staff:   Staff{KeyAdminGroup: "auth-key-admins"},
		Detect: Detect{AllowedCountries: []string{"KR"}, BlockFor: time.Hour, CountryBlockFor: 24 * time.Hour, ContainmentLimits: ContainmentLimits{
			RevokeKey: RateLimit{2, time.Hour}, RevokeToken: RateLimit{100, time.Minute},
			ForceRelogin: RateLimit{20, time.Minute}, BlockSource: RateLimit{50, time.Minute},
			SuspendClient: RateLimit{5, time.Hour}, BlockCountry: RateLimit{10, time.Hour},
		}},
		Role: "all",

		Telemetry: Telemetry{SampleRatio: 1},
	}
}

// ErrInvalid wraps every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Parse reads YAML over c; unknown fields are errors with their line.
func Parse(b []byte, c *Config) error {
	if len(b) > MaxConfigBytes {
		return fmt.Errorf("%w: file larger than %d bytes", ErrInvalid, MaxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// Load builds the configuration: defaults, then the YAML file (if path is not
// empty), then CUSTOS_* variables from env. Flags are applied by the caller
// afterwards; call Validate last.
func Load(path string, env func(string) (string, bool)) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("failed to read config: %w", err)
		}
		if err := Parse(b, &c); err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := applyEnv(reflect.ValueOf(&c).Elem(), env); err != nil {
		return c, err
	}
	return c, nil
}

func applyEnv(v reflect.Value, env func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f, fv := t.Field(i), v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, env); err != nil {
				return err
			}
			continue
		}
		name := f.Tag.Get("env")
		if name == "" {
			continue
		}
		s, ok := env(name)
		if !ok {
			continue
		}
		switch {
		case f.Type == reflect.TypeOf(time.Duration(0)):
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
			}
			fv.SetInt(int64(d))
		case f.Type.Kind() == reflect.String:
			fv.SetString(s)
		case f.Type.Kind() == reflect.Int:
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
			}
			fv.SetInt(int64(n))
		case f.Type.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
			}
			fv.SetBool(b)
		}
	}
	return nil
}

// Validate checks the whole tree and names the first bad field.
func (c *Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	if c.Data == "" {
		return bad("data", "a data directory is required (--data DIR)")
	}
	if c.Issuer == "" {
		iss, err := issuerFromListen(c.Listen)
		if err != nil {
			return bad("issuer", "empty, and %v", err)
		}
		c.Issuer = iss
	}
	if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return bad("issuer", "%q must be an http or https URL without query, fragment or user (RFC 8414 section 2)", c.Issuer)
	}
	if _, err := clientaddr.Parse(c.TrustedProxies); err != nil {
		return bad("trusted_proxies", "%v", err)
	}
	if p := c.OAuth.DPoPNoncePeriod; p != 0 && (p < MinDPoPNoncePeriod || p > MaxDPoPNoncePeriod) {
		return bad("oauth.dpop_nonce_period", "%s is not between %s and %s (0: 1m)", p, MinDPoPNoncePeriod, MaxDPoPNoncePeriod)
	}
	if !c.OAuth.DPoPNonce && (c.OAuth.DPoPNoncePeriod != 0 || c.OAuth.DPoPNonceSecretEnv != "") {
		return bad("oauth.dpop_nonce", "false, but oauth.dpop_nonce_period or oauth.dpop_nonce_secret_env is set: set dpop_nonce: true, or remove them")
	}
	switch c.Keys.Backend {
	case "sealed", "pkcs11":
	default:
		return bad("keys.backend", "must be sealed or pkcs11, not %q", c.Keys.Backend)
	}
	switch c.Keys.Alg {
	case "EdDSA", "ES256", "RS256":
	default:
		return bad("keys.alg", "must be EdDSA, ES256 or RS256, not %q", c.Keys.Alg)
	}
	switch c.Keys.Keyring {
	case "", "file":
	case "store":
		if c.Scale.Store == "" {
			return bad("keys.keyring", "store needs scale.store (PostgreSQL)")
		}
		if c.Keys.KEKEnv == "" && c.Keys.PassphraseEnv == "" && c.Keys.KEKFile == "" {
			return bad("keys.kek_file", "a keyring in the shared store needs its KEK from kek_env, passphrase_env or a kek_file outside the data directory, never DATA/kek")
		}
		if c.Keys.KEKFile != "" && c.Data != "" && inside(c.Keys.KEKFile, c.Data) {
			return bad("keys.kek_file", "%q is inside the data directory; keep the KEK of the shared keyring on another volume", c.Keys.KEKFile)
		}
	default:
		return bad("keys.keyring", "must be file or store, not %q", c.Keys.Keyring)
	}
	if c.Scale.Audit != "" {
		if !strings.HasPrefix(c.Scale.Audit, "mysql://") {
			return bad("scale.audit", "must be a mysql:// URL")
		}
		if c.Keys.Keyring != "store" {
			return bad("scale.audit", "a shared audit log needs keys.keyring: store, so every replica signs checkpoints with the one key")
		}
	}
	if c.Keys.Backend == "pkcs11" && c.Keys.PKCS11.Module == "" {
		return bad("keys.pkcs11.module", "required with the pkcs11 backend")
	}
	if c.Keys.RotateEvery <= 0 || c.Keys.RotateEvery > DefaultMaxKeyAge {
		return bad("keys.rotate_every", "must be in (0, %s]", DefaultMaxKeyAge)
	}
	if c.Keys.MaxKeyAge <= 0 || c.Keys.MaxKeyAge > DefaultMaxKeyAge {
		return bad("keys.max_key_age", "must be in (0, %s] (the hard maximum)", DefaultMaxKeyAge)
	}
	if c.Tokens.MaxTTL <= 0 || c.Tokens.MaxTTL > 24*time.Hour {
		return bad("tokens.max_ttl", "must be in (0, 24h]")
	}
	if c.Tokens.DefaultTTL <= 0 || c.Tokens.DefaultTTL > c.Tokens.MaxTTL {
		return bad("tokens.default_ttl", "must be in (0, tokens.max_ttl]")
	}
	switch c.Gateway.Unmatched {
	case "", "deny", "forward":
	default:
		return bad("gateway.unmatched", "must be deny or forward, not %q", c.Gateway.Unmatched)
	}
	for i, r := range c.Gateway.Routes {
		if r.Pattern == "" {
			return bad(fmt.Sprintf("gateway.routes[%d].pattern", i), "must not be empty")
		}
		if r.SubjectParam != "" && !strings.Contains(r.Pattern, "{"+r.SubjectParam+"}") {
			return bad(fmt.Sprintf("gateway.routes[%d].subject_param", i), "%q is not a parameter of %q", r.SubjectParam, r.Pattern)
		}
	}
	switch c.Role {
	case "all", "authority", "gateway", "detector", "forensics":
	default:
		return bad("role", "must be all, authority, gateway, detector or forensics, not %q", c.Role)
	}
	if c.Role != "all" && c.Role != "authority" && c.Scale.NATS == "" {
		return bad("scale.nats", "role %s needs the event bus", c.Role)
	}
	if c.Scale.Store != "" && !strings.HasPrefix(c.Scale.Store, "postgres://") && !strings.HasPrefix(c.Scale.Store, "postgresql://") {
		return bad("scale.store", "must be a postgres:// URL")
	}
	if err := checkRedisURLs(c.Scale.Redis); err != nil {
		return bad("scale.redis", "%v", err)
	}
	if c.Scale.Instances < 0 || c.Scale.Instance < 0 || (c.Scale.Instances > 0 && c.Scale.Instance >= c.Scale.Instances) {
		return bad("scale.instance", "must be in [0, scale.instances)")
	}
	if c.Detect.Webhook != "" && c.Detect.WebhookSecretEnv == "" {
		return bad("detect.webhook_secret_env", "a webhook needs an HMAC secret (name the environment variable holding it)")
	}
	if c.Detect.BlockFor <= 0 || c.Detect.BlockFor > 7*24*time.Hour {
		return bad("detect.block_for", "must be in (0, 168h]")
	}
	if c.Detect.CountryBlockFor <= 0 || c.Detect.CountryBlockFor > 7*24*time.Hour {
		return bad("detect.country_block_for", "must be in (0, 168h]")
	}
	cl := c.Detect.ContainmentLimits
	for _, l := range []RateLimit{cl.RevokeKey, cl.RevokeToken, cl.ForceRelogin, cl.BlockSource, cl.SuspendClient, cl.BlockCountry} {
		if l.Max < 0 || l.Per < 0 || (l.Max > 0 && l.Per == 0) {
			return bad("detect.containment_limits", "max must not be negative and needs a positive per")
		}
	}
	if c.Gateway.MaxStale < 0 || c.Gateway.MaxStale > time.Hour {
		return bad("gateway.max_stale", "must be in [0, 1h]")
	}
	if err := c.Detect.validateSinks(bad); err != nil {
		return err
	}
	if c.Gateway.Leeway < 0 || c.Gateway.Leeway > 5*time.Minute {
		return bad("gateway.leeway", "must be in [0, 5m]")
	}
	if e := c.Telemetry.OTLPEndpoint; e != "" && !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
		return bad("telemetry.otlp_endpoint", "must be an http:// or https:// URL, not %q", e)
	}
	if r := c.Telemetry.SampleRatio; r < 0 || r > 1 || r != r {
		return bad("telemetry.sample_ratio", "must be in [0, 1]")
	}
	if err := provider.Validate(c.ProviderConfigs()); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for _, p := range c.Providers {
		if p.Issuer == c.Issuer {
			return bad("providers", "provider %s has custos's own issuer %q", p.Name, p.Issuer)
		}
	}
	return nil
}

// inside reports whether path lies in dir (both made absolute and clean).
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// issuerFromListen is the issuer a listen address implies: http://HOST:PORT,
// with 127.0.0.1 for a wildcard host.
func issuerFromListen(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		return "", fmt.Errorf("listen %q names no fixed port to derive it from", listen)
	}
	if wildcardHost(host) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func wildcardHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "" || (ip != nil && ip.IsUnspecified())
}

// CheckIssuer compares the issuer with the address the API listens on,
// for the processes that serve the metadata document (roles all and
// authority). It refuses an issuer on a loopback address that the listener
// cannot answer on (another port, or a listener on another specific
// address): discovery and jwks_uri would point at nothing, or at another
// process. It warns when the issuer was derived from a wildcard listen
// address, and when a loopback-only listener serves a public issuer, which
// is right only behind a reverse proxy.
func (c *Config) CheckIssuer() (warning string, err error) {
	u, err := url.Parse(c.Issuer)
	if err != nil {
		return "", fmt.Errorf("%w: issuer: %v", ErrInvalid, err)
	}
	lhost, lport, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("%w: listen: %v", ErrInvalid, err)
	}
	ihost, iport := u.Hostname(), u.Port()
	if iport == "" {
		iport = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	loopback := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "localhost" || (ip != nil && ip.IsLoopback())
	}
	switch {
	case loopback(ihost) && iport != lport:
		return "", fmt.Errorf("%w: issuer: %s is on port %s but listen %s is on port %s; discovery and jwks_uri would point elsewhere (set issuer to the URL clients reach, or leave it empty to derive it)",
			ErrInvalid, c.Issuer, iport, c.Listen, lport)
	case loopback(ihost) && !wildcardHost(lhost) && !loopback(lhost):
		return "", fmt.Errorf("%w: issuer: %s is a loopback address but listen %s is not; discovery would not reach this process",
			ErrInvalid, c.Issuer, c.Listen)
	case wildcardHost(lhost) && loopback(ihost):
		return fmt.Sprintf("issuer %s is a loopback address while listen %s accepts every address: clients elsewhere will find no metadata there; set issuer to the URL they reach", c.Issuer, c.Listen), nil
	case loopback(lhost) && !loopback(ihost):
		return fmt.Sprintf("issuer %s is not reachable on listen %s itself; this is right only behind a reverse proxy that forwards it", c.Issuer, c.Listen), nil
	}
	return "", nil
}

func (d Detect) validateSinks(bad func(field, format string, a ...any) error) error {
	for field, f := range map[string]string{"detect.syslog_format": d.SyslogFormat, "detect.alerts_file_format": d.AlertsFileFormat, "detect.splunk.format": d.Splunk.Format} {
		if f != "" && f != "native" && f != "ocsf" {
			return bad(field, "must be native or ocsf, not %q", f)
		}
	}
	switch d.SyslogNetwork {
	case "", "udp", "tcp", "tls":
	default:
		return bad("detect.syslog_network", "must be udp, tcp or tls, not %q", d.SyslogNetwork)
	}
	if d.Splunk.URL != "" && d.Splunk.TokenEnv == "" {
		return bad("detect.splunk.token_env", "the collector needs a token (name the environment variable holding it)")
	}
	switch d.PagerDuty.MinSeverity {
	case "", "info", "low", "medium", "high", "critical":
	default:
		return bad("detect.pagerduty.min_severity", "must be info, low, medium, high or critical, not %q", d.PagerDuty.MinSeverity)
	}
	return nil
}

// RedisURLs is scale.redis split at its commas: one URL for a single Redis,
// several for a sharded ledger (nil: no Redis). A comma inside a URL (in a
// password) is written %2C.
func (s Scale) RedisURLs() []string {
	if s.Redis == "" {
		return nil
	}
	urls := strings.Split(s.Redis, ",")
	for i, u := range urls {
		urls[i] = strings.TrimSpace(u)
	}
	return urls
}

// checkRedisURLs refuses a scale.redis list with an empty item, an item
// that is not a redis://host[:port][/db] URL, or two items naming the same
// server and database (one Redis would be two shards).
func checkRedisURLs(list string) error {
	seen := map[string]int{}
	for i, raw := range (Scale{Redis: list}).RedisURLs() {
		if raw == "" {
			return fmt.Errorf("item %d of the list is empty", i+1)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "redis" || u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("item %d must be a redis://host:port/db URL", i+1)
		}
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		db := strings.TrimPrefix(u.Path, "/")
		if db == "" {
			db = "0"
		}
		if n, err := strconv.Atoi(db); err != nil || n < 0 || strconv.Itoa(n) != db {
			return fmt.Errorf("item %d: the database must be a number", i+1)
		}
		id := strings.ToLower(u.Hostname()) + ":" + port + "/" + db
		if j, ok := seen[id]; ok {
			return fmt.Errorf("items %d and %d are the same Redis database (%s)", j+1, i+1, id)
		}
		seen[id] = i
	}
	return nil
}
