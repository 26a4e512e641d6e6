package staff

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/elimity-com/scim"
	scimerr "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"
	fp "github.com/scim2/filter-parser/v2"

	"github.com/custos-dev/custos/wire"
)

// StaffSchema is the SCIM extension carrying what the core User schema lacks:
// kind (employee, contractor, vendor, service), startDate and endDate.
const StaffSchema = "urn:custos:params:scim:schemas:extension:staff:2.0:User"

const enterpriseSchema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

func staffSchema() schema.Schema {
	return schema.Schema{
		ID:          StaffSchema,
		Name:        optional.NewString("Staff"),
		Description: optional.NewString("Contract kind and dates of a member of staff"),
		Attributes: []schema.CoreAttribute{
			schema.SimpleCoreAttribute(schema.SimpleStringParams(schema.StringParams{
				Name: "kind", CanonicalValues: []string{"employee", "contractor", "vendor", "service"},
			})),
			schema.SimpleCoreAttribute(schema.SimpleDateTimeParams(schema.DateTimeParams{Name: "startDate"})),
			schema.SimpleCoreAttribute(schema.SimpleDateTimeParams(schema.DateTimeParams{Name: "endDate"})),
		},
	}
}

var (
	userSchema      = schema.CoreUserSchema()
	groupSchema     = schema.CoreGroupSchema()
	userExtensions  = []schema.Schema{schema.ExtensionEnterpriseUser(), staffSchema()}
	knownUserSchema = map[string]bool{userSchema.ID: true, enterpriseSchema: true, StaffSchema: true}
)

type actorKey struct{}

func actorOf(r *http.Request) string {
	if a, ok := r.Context().Value(actorKey{}).(string); ok {
		return a
	}
	return "scim:unknown"
}

// AddSCIMToken creates a bearer token for an identity provider named name and
// returns it; only its SHA-256 is stored, so this is the one time it is seen.
func (d *Directory) AddSCIMToken(ctx context.Context, name, actor string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 128 {
		return "", fmt.Errorf("failed to add SCIM token: %w: name must be 1-128 characters", ErrInvalid)
	}
	var b [32]byte
	if _, err := io.ReadFull(randReader, b[:]); err != nil {
		return "", fmt.Errorf("failed to add SCIM token: %w", err)
	}
	token := "cscim_" + base64.RawURLEncoding.EncodeToString(b[:])
	err := d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO staff_scim_tokens(id, name, hash, created_at, created_by) VALUES ($1,$2,$3,$4,$5)`,
			newID(), name, tokenHash(token), nanos(d.now()), actor); err != nil {
			if strings.Contains(strings.ToLower(err.Error()), "unique") {
				return fmt.Errorf("failed to add SCIM token %q: %w", name, ErrUniqueness)
			}
			return fmt.Errorf("failed to add SCIM token: %w", err)
		}
		return d.record(ctx, tx, actor, "scim_token.add", name, map[string]any{})
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// RevokeSCIMToken withdraws the identity provider token named name.
func (d *Directory) RevokeSCIMToken(ctx context.Context, name, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		res, err := tx.ExecContext(ctx, `UPDATE staff_scim_tokens SET revoked_at=$2 WHERE name=$1 AND revoked_at IS NULL`, name, nanos(d.now()))
		if err != nil {
			return fmt.Errorf("failed to revoke SCIM token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("failed to revoke SCIM token %q: %w", name, ErrNotFound)
		}
		return d.record(ctx, tx, actor, "scim_token.revoke", name, map[string]any{})
	})
}

// LegacySCIMToken is a token made by AddSCIMToken, as stored: its name and
// the SHA-256 (hex) of the token.
type LegacySCIMToken struct {
	Name, Hash, CreatedBy string
	CreatedAt             time.Time
	RevokedAt             *time.Time
}

// SCIMTokens lists the tokens made by AddSCIMToken, so that they can be
// carried over to a credential registry.
func (d *Directory) SCIMTokens(ctx context.Context) ([]LegacySCIMToken, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT name, hash, created_by, created_at, revoked_at FROM staff_scim_tokens ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("failed to list SCIM tokens: %w", err)
	}
	defer rows.Close()
	var out []LegacySCIMToken
	for rows.Next() {
		var t LegacySCIMToken
		var created int64
		var revoked sql.NullInt64
		if err := rows.Scan(&t.Name, &t.Hash, &t.CreatedBy, &created, &revoked); err != nil {
			return nil, fmt.Errorf("failed to list SCIM tokens: %w", err)
		}
		t.CreatedAt, t.RevokedAt = fromNanos(created), timePtr(revoked)
		out = append(out, t)
	}
	return out, rows.Err()
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// scimTokenName returns the name of the live token, or ErrUnauthorized.
func (d *Directory) scimTokenName(ctx context.Context, header string) (string, error) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", ErrUnauthorized
	}
	var name string
	err := d.db.QueryRowContext(ctx, `SELECT name FROM staff_scim_tokens WHERE hash=$1 AND revoked_at IS NULL`, tokenHash(strings.TrimSpace(token))).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrUnauthorized
	}
	if err != nil {
		return "", fmt.Errorf("failed to check SCIM token: %w", err)
	}
	return name, nil
}

// scimProvider authenticates a SCIM request: through Config.SCIMAuth when
// set (which then owns every SCIM token; see SCIMTokens), else against the
// tokens made with AddSCIMToken.
func (d *Directory) scimProvider(ctx context.Context, header string) (string, error) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", ErrUnauthorized
	}
	if d.cfg.SCIMAuth != nil {
		return d.cfg.SCIMAuth.SCIMProvider(ctx, strings.TrimSpace(token))
	}
	return d.scimTokenName(ctx, header)
}

// SCIMHandler serves SCIM 2.0 Users and Groups for identity providers. Mount
// it at /scim/v2/ (with or without stripping the prefix). Every request needs
// a bearer token from AddSCIMToken; changes are attributed to "scim:NAME".
func (d *Directory) SCIMHandler() http.Handler {
	srv, err := scim.NewServer(&scim.ServerArgs{
		ServiceProviderConfig: &scim.ServiceProviderConfig{
			MaxResults:       100,
			SupportFiltering: true,
			SupportPatch:     true,
			AuthenticationSchemes: []scim.AuthenticationScheme{{
				Type: scim.AuthenticationTypeOauthBearerToken, Name: "Bearer token",
				Description: "A token made with `custos scim tokens add`", Primary: true,
			}},
		},
		ResourceTypes: []scim.ResourceType{
			{
				ID: optional.NewString("User"), Name: "User", Endpoint: "/Users",
				Description: optional.NewString("Staff member or service account"),
				Schema:      userSchema,
				SchemaExtensions: []scim.SchemaExtension{
					{Schema: userExtensions[0]}, {Schema: userExtensions[1]},
				},
				Handler: userHandler{d},
			},
			{
				ID: optional.NewString("Group"), Name: "Group", Endpoint: "/Groups",
				Description: optional.NewString("Group of staff"),
				Schema:      groupSchema,
				Handler:     groupHandler{d},
			},
		},
	})
	if err != nil {
		panic(fmt.Sprintf("staff: invalid SCIM server configuration: %v", err)) // static configuration
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				d.log.Error("SCIM handler panic", "panic", v, "path", r.URL.Path)
				writeSCIMError(w, scimerr.ScimError{Status: http.StatusInternalServerError, Detail: "internal error"})
			}
		}()
		name, err := d.scimProvider(r.Context(), r.Header.Get("Authorization"))
		if errors.Is(err, ErrForbidden) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="custos-scim", error="insufficient_scope"`)
			writeSCIMError(w, scimerr.ScimError{Status: http.StatusForbidden, Detail: "this credential may not call SCIM; a scim credential is required"})
			return
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="custos-scim"`)
			status := http.StatusUnauthorized
			if !errors.Is(err, ErrUnauthorized) {
				status = http.StatusInternalServerError
			}
			writeSCIMError(w, scimerr.ScimError{Status: status, Detail: "a valid SCIM bearer token is required"})
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), actorKey{}, "scim:"+name))
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/scim")
		if r.URL.RawPath != "" {
			r.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, "/scim")
		}
		if r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
			if err != nil {
				writeSCIMError(w, scimerr.ScimError{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)})
				return
			}
			body, serr := prepareBody(r.Method, r.URL.Path, body)
			if serr != nil {
				writeSCIMError(w, *serr)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		srv.ServeHTTP(w, r)
	})
}

func writeSCIMError(w http.ResponseWriter, e scimerr.ScimError) {
	raw, _ := json.Marshal(e)
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(e.Status)
	w.Write(raw)
}

func invalid(scimType scimerr.ScimType, detail string) *scimerr.ScimError {
	return &scimerr.ScimError{ScimType: scimType, Detail: detail, Status: http.StatusBadRequest}
}

// prepareBody checks what the SCIM library does not — that every schema a
// resource names is one this server knows — and rewrites the one known
// non-compliance: Microsoft Entra sends "active" as the string "True" or
// "False" in PATCH operations.
func prepareBody(method, path string, body []byte) ([]byte, *scimerr.ScimError) {
	path = strings.TrimPrefix(path, "/v2")
	users := path == "/Users" || strings.HasPrefix(path, "/Users/")
	groups := path == "/Groups" || strings.HasPrefix(path, "/Groups/")
	if !users && !groups {
		return body, nil
	}
	if err := wire.CheckKeys(body); err != nil {
		return nil, invalid(scimerr.ScimTypeInvalidSyntax, "the body is not a strict JSON object: "+err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil || dec.More() {
		return nil, invalid(scimerr.ScimTypeInvalidSyntax, "the body is not a JSON object")
	}
	if serr := checkStrings("", doc); serr != nil {
		return nil, serr
	}
	if method == http.MethodPatch {
		if !users {
			return body, nil
		}
		ops, _ := doc["Operations"].([]any)
		changed := false
		for _, op := range ops {
			m, ok := op.(map[string]any)
			if !ok {
				continue
			}
			path, _ := m["path"].(string)
			if strings.EqualFold(strings.TrimSpace(path), "active") {
				if b, ok := stringBool(m["value"]); ok {
					m["value"], changed = b, true
				}
			}
			if v, ok := m["value"].(map[string]any); ok && path == "" {
				for k, val := range v {
					if strings.EqualFold(k, "active") {
						if b, ok := stringBool(val); ok {
							v[k], changed = b, true
						}
					}
				}
			}
		}
		if !changed {
			return body, nil
		}
		out, err := json.Marshal(doc)
		if err != nil {
			return nil, invalid(scimerr.ScimTypeInvalidSyntax, "the body could not be re-encoded")
		}
		return out, nil
	}
	schemas, ok := doc["schemas"].([]any)
	if !ok || len(schemas) == 0 {
		return nil, invalid(scimerr.ScimTypeInvalidSyntax, `"schemas" must be a non-empty array`)
	}
	for _, s := range schemas {
		id, _ := s.(string)
		if users && !knownUserSchema[id] || groups && id != groupSchema.ID {
			return nil, invalid(scimerr.ScimTypeInvalidValue, fmt.Sprintf("unknown schema %q", fmt.Sprint(s)))
		}
	}
	return body, nil
}

// checkStrings refuses a control character (C0, DEL, C1), a bidirectional
// formatting character, a zero-width character or a line separator in any
// attribute name or string value of v, at any depth. An identity provider
// has no reason to send one, and each can make a userName, a display name or
// an audit line read as something else. The one exception is a line break
// in a "formatted" value, which RFC 7643 §4.1.2 defines as multi-line.
func checkStrings(at string, v any) *scimerr.ScimError {
	switch v := v.(type) {
	case string:
		multiLine := strings.EqualFold(at[strings.LastIndexByte(at, '.')+1:], "formatted")
		for i, r := range v {
			if (r == '\n' || r == '\r') && multiLine {
				continue
			}
			if forbiddenRune(r) {
				return invalid(scimerr.ScimTypeInvalidValue, fmt.Sprintf("%s holds the control or formatting character %U at byte %d", orBody(at), r, i))
			}
		}
	case map[string]any:
		for k, x := range v {
			for _, r := range k {
				if forbiddenRune(r) {
					return invalid(scimerr.ScimTypeInvalidValue, fmt.Sprintf("an attribute name in %s holds the control or formatting character %U", orBody(at), r))
				}
			}
			if at != "" {
				k = at + "." + k
			}
			if serr := checkStrings(k, x); serr != nil {
				return serr
			}
		}
	case []any:
		for _, x := range v {
			if serr := checkStrings(at, x); serr != nil {
				return serr
			}
		}
	}
	return nil
}

func orBody(at string) string {
	if at == "" {
		return "the body"
	}
	return fmt.Sprintf("%q", at)
}

func forbiddenRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi
		return true
	case r >= 0x200b && r <= 0x200d, r == 0x2060, r == 0xfeff, r == 0x2028, r == 0x2029: // zero width, separators
		return true
	}
	return false
}

func stringBool(v any) (bool, bool) {
	s, ok := v.(string)
	if !ok {
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// toSCIMError maps directory errors to SCIM errors at the HTTP edge.
func toSCIMError(err error, id string) error {
	var se scimerr.ScimError
	var sep *scimerr.ScimError
	switch {
	case errors.As(err, &se):
		return se
	case errors.As(err, &sep):
		return *sep
	case errors.Is(err, ErrNotFound):
		return scimerr.ScimErrorResourceNotFound(id)
	case errors.Is(err, ErrUniqueness):
		e := scimerr.ScimErrorUniqueness
		e.Detail = err.Error()
		return e
	case errors.Is(err, ErrInvalid):
		return scimerr.ScimError{ScimType: scimerr.ScimTypeInvalidValue, Detail: err.Error(), Status: http.StatusBadRequest}
	case errors.Is(err, ErrForbidden):
		return scimerr.ScimError{Detail: err.Error(), Status: http.StatusForbidden}
	case errors.Is(err, ErrLastAdmin):
		return scimerr.ScimError{ScimType: scimerr.ScimTypeMutability, Detail: err.Error(), Status: http.StatusConflict}
	case errors.Is(err, ErrDeparted):
		return scimerr.ScimError{ScimType: scimerr.ScimTypeMutability, Detail: err.Error(), Status: http.StatusBadRequest}
	}
	slog.Error("SCIM request failed", "err", err)
	return scimerr.ScimError{Status: http.StatusInternalServerError, Detail: "internal error"}
}

// page slices items for startIndex (1-based) and count.
func page[T any](items []T, params scim.ListRequestParams) []T {
	start := params.StartIndex - 1
	if start < 0 {
		start = 0
	}
	if start > len(items) {
		start = len(items)
	}
	end := len(items)
	if params.Count >= 0 && start+params.Count < end {
		end = start + params.Count
	}
	return items[start:end]
}

// passes evaluates a validated filter, treating a panic inside the filter
// library as no match.
func passes(params scim.ListRequestParams, res map[string]any) (ok bool) {
	if params.FilterValidator == nil {
		return true
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return params.FilterValidator.PassesFilter(res) == nil
}

// userNameEq recognises the filter identity providers send before creating a
// user, userName eq "…", so it can be answered from the index.
func userNameEq(params scim.ListRequestParams) (string, bool) {
	if params.FilterValidator == nil {
		return "", false
	}
	e, ok := params.FilterValidator.GetFilter().(*fp.AttributeExpression)
	if !ok || e.Operator != fp.EQ || e.AttributePath.SubAttribute != nil || !strings.EqualFold(e.AttributePath.AttributeName, "userName") {
		return "", false
	}
	if u := e.AttributePath.URI(); u != "" && u != userSchema.ID {
		return "", false
	}
	s, ok := e.CompareValue.(string)
	return s, ok
}

type userHandler struct{ d *Directory }

func (h userHandler) resource(ctx context.Context, q querier, p *personRow) (scim.Resource, error) {
	attrs := map[string]any{}
	for k, v := range p.attrs {
		attrs[k] = v
	}
	attrs["active"] = p.active && p.status == Active
	gs, err := h.d.groupsOf(ctx, q, p.id)
	if err != nil {
		return scim.Resource{}, err
	}
	if len(gs) > 0 {
		var list []any
		for _, g := range gs {
			list = append(list, map[string]any{"value": g.id, "display": g.name, "$ref": "Groups/" + g.id})
		}
		attrs["groups"] = list
	}
	created, modified := p.created, p.modified
	res := scim.Resource{ID: p.id, Attributes: attrs, Meta: scim.Meta{Created: &created, LastModified: &modified}}
	if p.externalID != "" {
		res.ExternalID = optional.NewString(p.externalID)
	}
	return res, nil
}

func (h userHandler) Create(r *http.Request, attrs scim.ResourceAttributes) (scim.Resource, error) {
	ctx := r.Context()
	var res scim.Resource
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := h.d.savePerson(ctx, tx, st, nil, attrs, actorOf(r))
		if err != nil {
			return err
		}
		res, err = h.resource(ctx, tx, p)
		return err
	})
	if err != nil {
		return scim.Resource{}, toSCIMError(err, "")
	}
	return res, nil
}

// own refuses an identity or group the caller's provider did not provision.
func own(r *http.Request, provider string) error {
	if prov := providerOf(actorOf(r)); provider != prov {
		return fmt.Errorf("%w %q", ErrForbidden, prov)
	}
	return nil
}

func (h userHandler) Get(r *http.Request, id string) (scim.Resource, error) {
	p, err := h.d.loadPerson(r.Context(), h.d.db, id)
	if err == nil && p.deleted {
		err = ErrNotFound
	}
	if err == nil {
		err = own(r, p.provider)
	}
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	res, err := h.resource(r.Context(), h.d.db, p)
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	return res, nil
}

func (h userHandler) GetAll(r *http.Request, params scim.ListRequestParams) (scim.Page, error) {
	ctx := r.Context()
	var ps []*personRow
	var err error
	prov := providerOf(actorOf(r))
	if name, ok := userNameEq(params); ok {
		ps, err = h.d.queryPeople(ctx, h.d.db, `deleted=0 AND provider=$1 AND user_name_key=$2`, prov, nameKey(name))
	} else {
		ps, err = h.d.queryPeople(ctx, h.d.db, `deleted=0 AND provider=$1`, prov)
	}
	if err != nil {
		return scim.Page{}, toSCIMError(err, "")
	}
	return pageOf(params, len(ps), func(i int) (scim.Resource, string, string, error) {
		res, err := h.resource(ctx, h.d.db, ps[i])
		return res, ps[i].id, ps[i].externalID, err
	})
}

// pageOf is the answer to a list request over n resources: those that pass
// its filter (on every attribute, id and externalId included), paginated.
func pageOf(params scim.ListRequestParams, n int, at func(i int) (res scim.Resource, id, externalID string, err error)) (scim.Page, error) {
	matched := []scim.Resource{}
	for i := 0; i < n; i++ {
		res, id, extID, err := at(i)
		if err != nil {
			return scim.Page{}, toSCIMError(err, "")
		}
		full := map[string]any{"id": id, "externalId": extID}
		for k, v := range res.Attributes {
			full[k] = v
		}
		if passes(params, full) {
			matched = append(matched, res)
		}
	}
	return scim.Page{TotalResults: len(matched), Resources: page(matched, params)}, nil
}

func (h userHandler) Replace(r *http.Request, id string, attrs scim.ResourceAttributes) (scim.Resource, error) {
	return h.update(r, id, func(map[string]any) (map[string]any, error) { return attrs, nil })
}

func (h userHandler) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	return h.update(r, id, func(cur map[string]any) (map[string]any, error) {
		for _, op := range ops {
			if err := applyUserOp(cur, op); err != nil {
				return nil, err
			}
		}
		return cur, nil
	})
}

// update loads, changes and saves one user in a single transaction, so a
// failed operation leaves nothing applied.
func (h userHandler) update(r *http.Request, id string, change func(map[string]any) (map[string]any, error)) (scim.Resource, error) {
	ctx := r.Context()
	var res scim.Resource
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := h.d.loadPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		if p.deleted {
			return ErrNotFound
		}
		if err := own(r, p.provider); err != nil {
			return err
		}
		attrs, err := change(p.attrs)
		if err != nil {
			return err
		}
		if p, err = h.d.savePerson(ctx, tx, st, p, attrs, actorOf(r)); err != nil {
			return err
		}
		res, err = h.resource(ctx, tx, p)
		return err
	})
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	return res, nil
}

func (h userHandler) Delete(r *http.Request, id string) error {
	ctx := r.Context()
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := h.d.loadPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		if p.deleted {
			return ErrNotFound
		}
		if err := own(r, p.provider); err != nil {
			return err
		}
		return h.d.deletePerson(ctx, tx, st, p, actorOf(r))
	})
	if err != nil {
		return toSCIMError(err, id)
	}
	return nil
}

type groupHandler struct{ d *Directory }

func (h groupHandler) resource(ctx context.Context, q querier, g *groupRow) (scim.Resource, error) {
	ms, err := h.d.members(ctx, q, g.id)
	if err != nil {
		return scim.Resource{}, err
	}
	attrs := map[string]any{"displayName": g.name}
	if len(ms) > 0 {
		var list []any
		for _, m := range ms {
			list = append(list, map[string]any{"value": m.id, "display": m.userName, "type": "User", "$ref": "Users/" + m.id})
		}
		attrs["members"] = list
	}
	created, modified := g.created, g.modified
	res := scim.Resource{ID: g.id, Attributes: attrs, Meta: scim.Meta{Created: &created, LastModified: &modified}}
	if g.externalID != "" {
		res.ExternalID = optional.NewString(g.externalID)
	}
	return res, nil
}

func memberIDs(v any) ([]string, error) {
	list, ok := v.([]any)
	if v == nil {
		return nil, nil
	}
	if !ok {
		list = []any{v}
	}
	var out []string
	for _, m := range list {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil, invalid(scimerr.ScimTypeInvalidValue, "a member must be an object with a value")
		}
		id, _ := mm["value"].(string)
		if id == "" {
			return nil, invalid(scimerr.ScimTypeInvalidValue, "a member must have a value")
		}
		if t, _ := mm["type"].(string); t != "" && !strings.EqualFold(t, "User") {
			return nil, invalid(scimerr.ScimTypeInvalidValue, "only users may be members of a group")
		}
		out = append(out, id)
	}
	return out, nil
}

func (h groupHandler) Create(r *http.Request, attrs scim.ResourceAttributes) (scim.Resource, error) {
	ctx := r.Context()
	var res scim.Resource
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		name, _ := attrs["displayName"].(string)
		ext, _ := attrs["externalId"].(string)
		g, err := h.d.createGroup(ctx, tx, name, ext, actorOf(r))
		if err != nil {
			return err
		}
		ids, err := memberIDs(attrs["members"])
		if err != nil {
			return err
		}
		if err := h.d.setMembers(ctx, tx, g.id, ids, actorOf(r)); err != nil {
			return err
		}
		res, err = h.resource(ctx, tx, g)
		return err
	})
	if err != nil {
		return scim.Resource{}, toSCIMError(err, "")
	}
	return res, nil
}

func (h groupHandler) Get(r *http.Request, id string) (scim.Resource, error) {
	g, err := h.d.loadGroup(r.Context(), h.d.db, id)
	if err == nil {
		err = own(r, g.provider)
	}
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	res, err := h.resource(r.Context(), h.d.db, g)
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	return res, nil
}

func (h groupHandler) GetAll(r *http.Request, params scim.ListRequestParams) (scim.Page, error) {
	ctx := r.Context()
	all, err := h.d.listGroups(ctx, h.d.db)
	if err != nil {
		return scim.Page{}, toSCIMError(err, "")
	}
	var gs []*groupRow
	for _, g := range all {
		if own(r, g.provider) == nil {
			gs = append(gs, g)
		}
	}
	return pageOf(params, len(gs), func(i int) (scim.Resource, string, string, error) {
		res, err := h.resource(ctx, h.d.db, gs[i])
		return res, gs[i].id, gs[i].externalID, err
	})
}

func (h groupHandler) Replace(r *http.Request, id string, attrs scim.ResourceAttributes) (scim.Resource, error) {
	return h.update(r, id, func(g *groupState) error {
		g.name, _ = attrs["displayName"].(string)
		g.externalID, _ = attrs["externalId"].(string)
		ids, err := memberIDs(attrs["members"])
		g.members = ids
		return err
	})
}

func (h groupHandler) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	return h.update(r, id, func(g *groupState) error {
		for _, op := range ops {
			if err := applyGroupOp(g, op); err != nil {
				return err
			}
		}
		return nil
	})
}

// groupState is a group being changed in memory before it is saved.
type groupState struct {
	name, externalID string
	members          []string // staff ids
	displays         map[string]string
}

func (h groupHandler) update(r *http.Request, id string, change func(*groupState) error) (scim.Resource, error) {
	ctx := r.Context()
	var res scim.Resource
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		g, err := h.d.loadGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := own(r, g.provider); err != nil {
			return err
		}
		ms, err := h.d.members(ctx, tx, g.id)
		if err != nil {
			return err
		}
		gs := &groupState{name: g.name, externalID: g.externalID, displays: map[string]string{}}
		for _, m := range ms {
			gs.members = append(gs.members, m.id)
			gs.displays[m.id] = m.userName
		}
		if err := change(gs); err != nil {
			return err
		}
		if err := h.d.updateGroup(ctx, tx, g, gs.name, gs.externalID, actorOf(r)); err != nil {
			return err
		}
		if err := h.d.setMembers(ctx, tx, g.id, gs.members, actorOf(r)); err != nil {
			return err
		}
		res, err = h.resource(ctx, tx, g)
		return err
	})
	if err != nil {
		return scim.Resource{}, toSCIMError(err, id)
	}
	return res, nil
}

// Interface guards.
var (
	_ scim.ResourceHandler = userHandler{}
	_ scim.ResourceHandler = groupHandler{}
)

func (h groupHandler) Delete(r *http.Request, id string) error {
	ctx := r.Context()
	err := h.d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		g, err := h.d.loadGroup(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := own(r, g.provider); err != nil {
			return err
		}
		return h.d.deleteGroup(ctx, tx, g, actorOf(r))
	})
	if err != nil {
		return toSCIMError(err, id)
	}
	return nil
}
