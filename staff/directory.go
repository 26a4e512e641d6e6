package staff

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Person is one directory entry: a person or a service account.
type Person struct {
	ID              string     `json:"id"`
	UserName        string     `json:"user_name"`
	DisplayName     string     `json:"display_name,omitempty"`
	ExternalID      string     `json:"external_id,omitempty"`
	Kind            Kind       `json:"kind"`
	Status          Status     `json:"status"`
	Start           *time.Time `json:"start,omitempty"`
	End             *time.Time `json:"end,omitempty"`
	DepartedAt      *time.Time `json:"departed_at,omitempty"`
	DepartureReason string     `json:"departure_reason,omitempty"`
	Groups          []string   `json:"groups"`
	Roles           []string   `json:"roles"`
	CreatedAt       time.Time  `json:"created_at"`
	ModifiedAt      time.Time  `json:"modified_at"`
}

// Change is one attributed entry of the append-only change log.
type Change struct {
	Seq    int64           `json:"seq"`
	At     time.Time       `json:"at"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Entity string          `json:"entity"`
	Detail json.RawMessage `json:"detail"`
}

// personRow is a person as stored: the SCIM attributes plus the columns
// derived from them.
type personRow struct {
	id, userName, externalID, displayName string
	kind                                  Kind
	status                                Status
	active, deleted                       bool
	start, end, departed                  *time.Time
	reason, provider                      string
	attrs                                 map[string]any
	created, modified                     time.Time
}

func (p *personRow) person(groups []string) Person {
	out := Person{
		ID: p.id, UserName: p.userName, DisplayName: p.displayName, ExternalID: p.externalID,
		Kind: p.kind, Status: p.status, Start: p.start, End: p.end, DepartedAt: p.departed,
		DepartureReason: p.reason, Groups: groups, Roles: rolesOf(p.attrs),
		CreatedAt: p.created, ModifiedAt: p.modified,
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	return out
}

// txState collects what a transaction did that needs follow-up after commit.
type txState struct{ departed bool }

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// withTx runs fn in one transaction; on commit, any departure it recorded is
// offboarded at once.
func (d *Directory) withTx(ctx context.Context, fn func(tx *sql.Tx, st *txState) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to begin transaction: %w", err)
	}
	defer tx.Rollback()
	var st txState
	if err := fn(tx, &st); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to commit: %w", err)
	}
	if st.departed {
		// The departure is durable; offboard now rather than at the next
		// sweep. A failure here is retried by every sweep.
		if err := d.offboardPending(context.WithoutCancel(ctx)); err != nil {
			d.log.Error("offboarding failed; the sweep will retry", "err", err)
		}
	}
	return nil
}

func nanos(t time.Time) int64 { return t.UTC().UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return nanos(*t)
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// record appends one change to staff_changes inside tx.
func (d *Directory) record(ctx context.Context, q querier, actor, action, entity string, detail any) error {
	if actor == "" {
		return fmt.Errorf("failed to record %s: %w: empty actor", action, ErrInvalid)
	}
	raw, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("failed to encode %s detail: %w", action, err)
	}
	var seq int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq),0)+1 FROM staff_changes`).Scan(&seq); err != nil {
		return fmt.Errorf("failed to read change sequence: %w", err)
	}
	if _, err := q.ExecContext(ctx, `INSERT INTO staff_changes(seq, at, actor, action, entity, detail) VALUES ($1,$2,$3,$4,$5,$6)`,
		seq, nanos(d.now()), actor, action, entity, string(raw)); err != nil {
		return fmt.Errorf("failed to record %s: %w", action, err)
	}
	return nil
}

// Changes returns up to limit changes with seq greater than after, oldest first.
func (d *Directory) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	rows, err := d.db.QueryContext(ctx, `SELECT seq, at, actor, action, entity, detail FROM staff_changes WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var at int64
		var detail string
		if err := rows.Scan(&c.Seq, &at, &c.Actor, &c.Action, &c.Entity, &detail); err != nil {
			return nil, fmt.Errorf("failed to read changes: %w", err)
		}
		c.At, c.Detail = fromNanos(at), json.RawMessage(detail)
		out = append(out, c)
	}
	return out, rows.Err()
}

const personCols = `id, user_name, external_id, display_name, kind, status, active, deleted, start_at, end_at, departed_at, departure_reason, attrs, created_at, modified_at, provider`

func scanPerson(sc interface{ Scan(...any) error }) (*personRow, error) {
	var p personRow
	var kind, status, attrs string
	var active, deleted int
	var start, end, departed sql.NullInt64
	var created, modified int64
	if err := sc.Scan(&p.id, &p.userName, &p.externalID, &p.displayName, &kind, &status, &active, &deleted,
		&start, &end, &departed, &p.reason, &attrs, &created, &modified, &p.provider); err != nil {
		return nil, err
	}
	p.kind, p.status, p.active, p.deleted = Kind(kind), Status(status), active != 0, deleted != 0
	p.start, p.end, p.departed = timePtr(start), timePtr(end), timePtr(departed)
	p.created, p.modified = fromNanos(created), fromNanos(modified)
	if err := json.Unmarshal([]byte(attrs), &p.attrs); err != nil {
		return nil, fmt.Errorf("failed to decode attributes of %s: %w", p.id, err)
	}
	return &p, nil
}

func (d *Directory) loadPerson(ctx context.Context, q querier, id string) (*personRow, error) {
	p, err := scanPerson(q.QueryRowContext(ctx, `SELECT `+personCols+` FROM staff_people WHERE id=$1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("failed to find %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load %q: %w", id, err)
	}
	return p, nil
}

func (d *Directory) queryPeople(ctx context.Context, q querier, where string, args ...any) ([]*personRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+personCols+` FROM staff_people WHERE `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to list people: %w", err)
	}
	defer rows.Close()
	var out []*personRow
	for rows.Next() {
		p, err := scanPerson(rows)
		if err != nil {
			return nil, fmt.Errorf("failed to list people: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// groupsOf returns the names of the groups id is currently a member of.
func (d *Directory) groupsOf(ctx context.Context, q querier, id string) ([]groupRef, error) {
	rows, err := q.QueryContext(ctx, `SELECT g.id, g.name FROM staff_memberships m JOIN staff_groups g ON g.id = m.group_id
		WHERE m.staff_id=$1 AND m.left_at IS NULL AND g.deleted = 0 ORDER BY g.name`, id)
	if err != nil {
		return nil, fmt.Errorf("failed to list groups of %s: %w", id, err)
	}
	defer rows.Close()
	var out []groupRef
	for rows.Next() {
		var g groupRef
		if err := rows.Scan(&g.id, &g.name); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

type groupRef struct{ id, name string }

func names(gs []groupRef) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.name)
	}
	return out
}

// Person returns the entry with id, including departed and deleted ones.
func (d *Directory) Person(ctx context.Context, id string) (Person, error) {
	p, err := d.loadPerson(ctx, d.db, id)
	if err != nil {
		return Person{}, err
	}
	gs, err := d.groupsOf(ctx, d.db, id)
	if err != nil {
		return Person{}, err
	}
	return p.person(names(gs)), nil
}

// PersonByUserName returns the live (not deleted) entry with userName,
// compared case-insensitively.
func (d *Directory) PersonByUserName(ctx context.Context, userName string) (Person, error) {
	ps, err := d.queryPeople(ctx, d.db, `user_name_key=$1 AND deleted=0`, nameKey(userName))
	if err != nil {
		return Person{}, err
	}
	if len(ps) == 0 {
		return Person{}, fmt.Errorf("failed to find %q: %w", userName, ErrNotFound)
	}
	return d.Person(ctx, ps[0].id)
}

// People lists every entry that was not deleted, oldest first.
func (d *Directory) People(ctx context.Context) ([]Person, error) {
	ps, err := d.queryPeople(ctx, d.db, `deleted=0`)
	if err != nil {
		return nil, err
	}
	out := make([]Person, 0, len(ps))
	for _, p := range ps {
		gs, err := d.groupsOf(ctx, d.db, p.id)
		if err != nil {
			return nil, err
		}
		out = append(out, p.person(names(gs)))
	}
	return out, nil
}

// providerOf is the identity provider an actor "scim:NAME" speaks for, or "".
func providerOf(actor string) string {
	if p, ok := strings.CutPrefix(actor, "scim:"); ok {
		return p
	}
	return ""
}

func nameKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// AddPerson creates an entry from p (ID, Status and timestamps are assigned)
// and puts it in p.Groups, creating groups that do not exist.
func (d *Directory) AddPerson(ctx context.Context, p Person, actor string) (Person, error) {
	if p.Kind == "" {
		p.Kind = Employee
	}
	if !validKind(p.Kind) {
		return Person{}, fmt.Errorf("failed to add person: %w: kind %q", ErrInvalid, p.Kind)
	}
	attrs := map[string]any{"userName": p.UserName, "active": true, "userType": string(p.Kind)}
	if p.DisplayName != "" {
		attrs["displayName"] = p.DisplayName
	}
	if p.ExternalID != "" {
		attrs["externalId"] = p.ExternalID
	}
	ext := map[string]any{"kind": string(p.Kind)}
	if p.Start != nil {
		ext["startDate"] = p.Start.UTC().Format(time.RFC3339)
	}
	if p.End != nil {
		ext["endDate"] = p.End.UTC().Format(time.RFC3339)
	}
	attrs[StaffSchema] = ext
	if len(p.Roles) > 0 {
		var roles []any
		for _, r := range p.Roles {
			roles = append(roles, map[string]any{"value": r})
		}
		attrs["roles"] = roles
	}
	var id string
	err := d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		row, err := d.savePerson(ctx, tx, st, nil, attrs, actor)
		if err != nil {
			return err
		}
		id = row.id
		for _, g := range p.Groups {
			gid, err := d.ensureGroup(ctx, tx, g, actor)
			if err != nil {
				return err
			}
			if err := d.addMember(ctx, tx, gid, id, actor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Person{}, err
	}
	return d.Person(ctx, id)
}

// SetEndDate sets (or, with nil, clears) when id's contract ends. An end
// date in the past makes them depart at once.
func (d *Directory) SetEndDate(ctx context.Context, id string, end *time.Time, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := d.loadPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		attrs := p.attrs
		ext, _ := attrs[StaffSchema].(map[string]any)
		if ext == nil {
			ext = map[string]any{}
		}
		if end == nil {
			delete(ext, "endDate")
		} else {
			ext["endDate"] = end.UTC().Format(time.RFC3339Nano)
		}
		attrs[StaffSchema] = ext
		_, err = d.savePerson(ctx, tx, st, p, attrs, actor)
		return err
	})
}

// SetRoles replaces id's roles.
func (d *Directory) SetRoles(ctx context.Context, id string, roles []string, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := d.loadPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		var rs []any
		for _, r := range roles {
			rs = append(rs, map[string]any{"value": r})
		}
		attrs := p.attrs
		if len(rs) == 0 {
			delete(attrs, "roles")
		} else {
			attrs["roles"] = rs
		}
		_, err = d.savePerson(ctx, tx, st, p, attrs, actor)
		return err
	})
}

// Depart marks id departed now for reason and offboards them.
func (d *Directory) Depart(ctx context.Context, id, actor, reason string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := d.loadPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		if p.status == Departed {
			return nil
		}
		return d.depart(ctx, tx, st, p, d.now(), reason, actor)
	})
}

// AddToGroup makes staffID a member of the group named group, creating it if
// needed.
func (d *Directory) AddToGroup(ctx context.Context, group, staffID, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		gid, err := d.ensureGroup(ctx, tx, group, actor)
		if err != nil {
			return err
		}
		return d.addMember(ctx, tx, gid, staffID, actor)
	})
}

// RemoveFromGroup ends staffID's membership of group.
func (d *Directory) RemoveFromGroup(ctx context.Context, group, staffID, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		g, err := d.groupByName(ctx, tx, group)
		if err != nil {
			return err
		}
		return d.removeMember(ctx, tx, g.id, staffID, actor)
	})
}

// derived is what the directory reads out of a person's SCIM attributes.
type derived struct {
	userName, externalID, displayName string
	active, activeSet                 bool
	kind                              Kind
	start, end                        *time.Time
}

var userTypeKinds = map[string]Kind{
	"employee": Employee, "contractor": Contractor, "vendor": Vendor, "service": Service,
	"serviceaccount": Service, "service account": Service, "contract": Contractor,
}

func derive(attrs map[string]any, prev Kind) (derived, error) {
	var f derived
	s, _ := attrs["userName"].(string)
	f.userName = strings.TrimSpace(s)
	if f.userName == "" || len(f.userName) > 256 {
		return f, fmt.Errorf("%w: userName must be 1-256 characters", ErrInvalid)
	}
	f.externalID, _ = attrs["externalId"].(string)
	f.displayName, _ = attrs["displayName"].(string)
	if f.displayName == "" {
		if n, ok := attrs["name"].(map[string]any); ok {
			f.displayName, _ = n["formatted"].(string)
		}
	}
	switch a := attrs["active"].(type) {
	case bool:
		f.active, f.activeSet = a, true
	case nil:
	default:
		return f, fmt.Errorf("%w: active must be a boolean", ErrInvalid)
	}
	f.kind = prev
	if ut, ok := attrs["userType"].(string); ok {
		if k, ok := userTypeKinds[strings.ToLower(strings.TrimSpace(ut))]; ok {
			f.kind = k
		}
	}
	if ext, ok := attrs[StaffSchema].(map[string]any); ok {
		if k, ok := ext["kind"].(string); ok && k != "" {
			f.kind = Kind(strings.ToLower(k))
			if !validKind(f.kind) {
				return f, fmt.Errorf("%w: kind %q is not employee, contractor, vendor or service", ErrInvalid, k)
			}
		}
		var err error
		if f.start, err = parseDate(ext["startDate"]); err != nil {
			return f, err
		}
		if f.end, err = parseDate(ext["endDate"]); err != nil {
			return f, err
		}
	}
	if f.kind == "" {
		f.kind = Employee
	}
	return f, nil
}

// parseDate reads an xsd:dateTime; one without a zone is taken as UTC.
func parseDate(v any) (*time.Time, error) {
	s, ok := v.(string)
	if v == nil || (ok && s == "") {
		return nil, nil
	}
	if !ok {
		return nil, fmt.Errorf("%w: date must be a string", ErrInvalid)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			t = t.UTC()
			return &t, nil
		}
	}
	return nil, fmt.Errorf("%w: date %q is not an xsd:dateTime", ErrInvalid, s)
}

func rolesOf(attrs map[string]any) []string {
	out := []string{}
	list, _ := attrs["roles"].([]any)
	for _, r := range list {
		switch r := r.(type) {
		case map[string]any:
			if v, ok := r["value"].(string); ok && v != "" {
				out = append(out, v)
			}
		case string:
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out
}

// cleanAttrs drops what must never be stored or is computed on output.
func cleanAttrs(attrs map[string]any) (map[string]any, error) {
	for k := range attrs {
		switch strings.ToLower(k) {
		case "password", "id", "meta", "groups", "schemas":
			delete(attrs, k)
		}
	}
	// A JSON round trip normalises numbers and nested types for storage and
	// comparison.
	raw, err := json.Marshal(attrs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return out, nil
}

// savePerson creates (old == nil) or updates a person from attrs, enforcing
// userName uniqueness and applying status transitions, inside tx.
func (d *Directory) savePerson(ctx context.Context, tx *sql.Tx, st *txState, old *personRow, attrs map[string]any, actor string) (*personRow, error) {
	attrs, err := cleanAttrs(attrs)
	if err != nil {
		return nil, err
	}
	prevKind := Kind("")
	if old != nil {
		prevKind = old.kind
		// An update without the staff extension keeps the contract dates and
		// kind the directory already has: an identity provider that does not
		// manage them must not clear an end date by omission.
		if _, ok := attrs[StaffSchema]; !ok {
			if ext, ok := old.attrs[StaffSchema]; ok {
				attrs[StaffSchema] = ext
			}
		}
	}
	f, err := derive(attrs, prevKind)
	if err != nil {
		return nil, err
	}
	now := d.now()
	row := &personRow{}
	if old != nil {
		*row = *old
	} else {
		row.id, row.created, row.status, row.active = newID(), now, Active, true
	}
	var taken int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM staff_people WHERE user_name_key=$1 AND deleted=0 AND id<>$2`,
		nameKey(f.userName), row.id).Scan(&taken); err != nil {
		return nil, fmt.Errorf("failed to check userName: %w", err)
	}
	if taken > 0 {
		return nil, fmt.Errorf("failed to save %q: %w", f.userName, ErrUniqueness)
	}
	wasActive := row.active
	row.userName, row.externalID, row.displayName, row.kind = f.userName, f.externalID, f.displayName, f.kind
	row.start, row.end, row.attrs, row.modified = f.start, f.end, attrs, now
	if f.activeSet {
		row.active = f.active
	}
	attrs["active"] = row.active
	reactivated := old != nil && !wasActive && row.active && row.status == Departed &&
		(row.end == nil || row.end.After(now))
	if reactivated {
		row.status, row.departed, row.reason = Active, nil, ""
	}
	raw, err := json.Marshal(attrs)
	if err != nil {
		return nil, fmt.Errorf("failed to encode attributes: %w", err)
	}
	action := "person.update"
	if old == nil {
		action = "person.create"
		_, err = tx.ExecContext(ctx, `INSERT INTO staff_people(id, user_name, user_name_key, external_id, display_name, kind, status, active, deleted,
			start_at, end_at, departed_at, departure_reason, attrs, created_at, modified_at, provider) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)`,
			row.id, row.userName, nameKey(row.userName), row.externalID, row.displayName, string(row.kind), string(row.status),
			boolInt(row.active), boolInt(row.deleted), nullTime(row.start), nullTime(row.end), nullTime(row.departed),
			row.reason, string(raw), nanos(row.created), nanos(row.modified), providerOf(actor))
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE staff_people SET user_name=$2, user_name_key=$3, external_id=$4, display_name=$5, kind=$6,
			status=$7, active=$8, start_at=$9, end_at=$10, departed_at=$11, departure_reason=$12, attrs=$13, modified_at=$14 WHERE id=$1`,
			row.id, row.userName, nameKey(row.userName), row.externalID, row.displayName, string(row.kind), string(row.status),
			boolInt(row.active), nullTime(row.start), nullTime(row.end), nullTime(row.departed), row.reason, string(raw), nanos(row.modified))
	}
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unique") {
			return nil, fmt.Errorf("failed to save %q: %w", f.userName, ErrUniqueness)
		}
		return nil, fmt.Errorf("failed to save %q: %w", f.userName, err)
	}
	if err := d.record(ctx, tx, actor, action, row.id, map[string]any{
		"user_name": row.userName, "kind": row.kind, "active": row.active,
		"start": row.start, "end": row.end, "roles": rolesOf(attrs)}); err != nil {
		return nil, err
	}
	if reactivated {
		if err := d.record(ctx, tx, actor, "person.reactivate", row.id, map[string]any{"user_name": row.userName}); err != nil {
			return nil, err
		}
	}
	if row.status == Active {
		switch {
		case !row.active:
			err = d.depart(ctx, tx, st, row, now, "deactivated by "+actor, actor)
		case row.end != nil && !row.end.After(now):
			err = d.depart(ctx, tx, st, row, *row.end, "contract ended", actor)
		}
	}
	return row, err
}

// depart marks p departed at `at`, ends their memberships and custodianships
// and queues their offboarding, inside tx.
func (d *Directory) depart(ctx context.Context, tx *sql.Tx, st *txState, p *personRow, at time.Time, reason, actor string) error {
	if d.cfg.Guard != nil && actor != OffboardingActor {
		if err := d.cfg.Guard.CheckDeparture(ctx, p.id); err != nil {
			return fmt.Errorf("failed to depart %s: %w: %v", p.id, ErrLastAdmin, err)
		}
	}
	p.status, p.departed, p.reason = Departed, &at, reason
	if _, err := tx.ExecContext(ctx, `UPDATE staff_people SET status=$2, departed_at=$3, departure_reason=$4, modified_at=$5 WHERE id=$1`,
		p.id, string(Departed), nanos(at), reason, nanos(d.now())); err != nil {
		return fmt.Errorf("failed to mark %s departed: %w", p.id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE staff_memberships SET left_at=$2 WHERE staff_id=$1 AND left_at IS NULL`, p.id, nanos(at)); err != nil {
		return fmt.Errorf("failed to end memberships of %s: %w", p.id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE staff_custodians SET removed_at=$2, removed_by=$3 WHERE staff_id=$1 AND removed_at IS NULL`,
		p.id, nanos(at), actor); err != nil {
		return fmt.Errorf("failed to end custodianships of %s: %w", p.id, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO staff_offboardings(id, staff_id, departed_at, reason) VALUES ($1,$2,$3,$4)`,
		newID(), p.id, nanos(at), reason); err != nil {
		return fmt.Errorf("failed to queue offboarding of %s: %w", p.id, err)
	}
	st.departed = true
	return d.record(ctx, tx, actor, "person.depart", p.id, map[string]any{"user_name": p.userName, "departed_at": at, "reason": reason})
}

// deletePerson departs p if needed and hides them from SCIM; the record stays
// for custodianship history.
func (d *Directory) deletePerson(ctx context.Context, tx *sql.Tx, st *txState, p *personRow, actor string) error {
	if p.status == Active {
		if err := d.depart(ctx, tx, st, p, d.now(), "deleted by "+actor, actor); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE staff_people SET deleted=1, active=0, modified_at=$2 WHERE id=$1`, p.id, nanos(d.now())); err != nil {
		return fmt.Errorf("failed to delete %s: %w", p.id, err)
	}
	return d.record(ctx, tx, actor, "person.delete", p.id, map[string]any{"user_name": p.userName})
}
