package staff

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/custos-dev/custos/keys"
)

// Custodian is one person's relation to a resource, now or in the past.
type Custodian struct {
	StaffID  string     `json:"staff_id"`
	UserName string     `json:"user_name"`
	Status   Status     `json:"status"`
	Role     Role       `json:"role"`
	Via      string     `json:"via"` // "explicit" or "group:NAME"
	Since    time.Time  `json:"since"`
	Until    *time.Time `json:"until,omitempty"` // nil while it lasts
}

// grant is a custodianship from either source, with the interval it held.
type grant struct {
	staffID string
	kind    ResourceKind
	id      string // resource id, or AnyID from a group rule
	role    Role
	via     string
	since   time.Time
	until   *time.Time
}

// covers says whether g gave its holder access to key k: the resource matches
// and the grant overlapped the key's life. Explicit grants name the key, so
// they count whatever their dates.
func (g grant) covers(k keys.Key) bool {
	if g.kind != SigningKey || (g.id != AnyID && g.id != k.KID) {
		return false
	}
	if g.via == "explicit" {
		return true
	}
	end := keyEnd(k)
	started := end == nil || g.since.Before(*end)
	notEnded := g.until == nil || g.until.After(k.CreatedAt)
	return started && notEnded
}

func keyEnd(k keys.Key) *time.Time {
	if k.RevokedAt != nil {
		return k.RevokedAt
	}
	return k.RetiredAt
}

// AddCustodian records staffID as custodian of (kind, id) in role.
func (d *Directory) AddCustodian(ctx context.Context, kind ResourceKind, id, staffID string, role Role, actor string) error {
	if (kind != SigningKey && kind != ClientSecret) || id == "" || id == AnyID || !validRole(role) {
		return fmt.Errorf("failed to add custodian: %w: kind %q id %q role %q", ErrInvalid, kind, id, role)
	}
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		p, err := d.loadPerson(ctx, tx, staffID)
		if err != nil {
			return err
		}
		if p.status == Departed || p.deleted {
			return fmt.Errorf("failed to add custodian %s: %w", staffID, ErrDeparted)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM staff_custodians WHERE resource_kind=$1 AND resource_id=$2
			AND staff_id=$3 AND role=$4 AND removed_at IS NULL`, string(kind), id, staffID, string(role)).Scan(&n); err != nil {
			return fmt.Errorf("failed to read custodians: %w", err)
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO staff_custodians(resource_kind, resource_id, staff_id, role, granted_at, granted_by)
			VALUES ($1,$2,$3,$4,$5,$6)`, string(kind), id, staffID, string(role), nanos(d.now()), actor); err != nil {
			return fmt.Errorf("failed to add custodian: %w", err)
		}
		return d.record(ctx, tx, actor, "custodian.add", string(kind)+":"+id, map[string]any{"staff_id": staffID, "role": role})
	})
}

// RemoveCustodian ends staffID's custodianship of (kind, id) in every role.
// The history stays: they still count as having had access.
func (d *Directory) RemoveCustodian(ctx context.Context, kind ResourceKind, id, staffID, actor string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		res, err := tx.ExecContext(ctx, `UPDATE staff_custodians SET removed_at=$4, removed_by=$5 WHERE resource_kind=$1 AND resource_id=$2
			AND staff_id=$3 AND removed_at IS NULL`, string(kind), id, staffID, nanos(d.now()), actor)
		if err != nil {
			return fmt.Errorf("failed to remove custodian: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("failed to remove custodian %s of %s: %w", staffID, id, ErrNotFound)
		}
		return d.record(ctx, tx, actor, "custodian.remove", string(kind)+":"+id, map[string]any{"staff_id": staffID})
	})
}

// grants returns every custodianship, explicit and from group rules, past and
// present; staffID "" means everyone's.
func (d *Directory) grants(ctx context.Context, q querier, staffID string) ([]grant, error) {
	var out []grant
	rows, err := q.QueryContext(ctx, `SELECT staff_id, resource_kind, resource_id, role, granted_at, removed_at FROM staff_custodians
		WHERE ($1 = '' OR staff_id = $1)`, staffID)
	if err != nil {
		return nil, fmt.Errorf("failed to read custodians: %w", err)
	}
	for rows.Next() {
		var g grant
		var kind, role string
		var since int64
		var until sql.NullInt64
		if err := rows.Scan(&g.staffID, &kind, &g.id, &role, &since, &until); err != nil {
			rows.Close()
			return nil, fmt.Errorf("failed to read custodians: %w", err)
		}
		g.kind, g.role, g.via, g.since, g.until = ResourceKind(kind), Role(role), "explicit", fromNanos(since), timePtr(until)
		out = append(out, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, r := range d.cfg.GroupRules {
		rows, err := q.QueryContext(ctx, `SELECT m.staff_id, m.joined_at, m.left_at FROM staff_memberships m JOIN staff_groups g ON g.id = m.group_id
			WHERE g.name_key = $1 AND ($2 = '' OR m.staff_id = $2)`, nameKey(r.Group), staffID)
		if err != nil {
			return nil, fmt.Errorf("failed to read members of %s: %w", r.Group, err)
		}
		for rows.Next() {
			g := grant{kind: r.Kind, id: r.ID, role: r.Role, via: "group:" + r.Group}
			var since int64
			var until sql.NullInt64
			if err := rows.Scan(&g.staffID, &since, &until); err != nil {
				rows.Close()
				return nil, fmt.Errorf("failed to read members of %s: %w", r.Group, err)
			}
			g.since, g.until = fromNanos(since), timePtr(until)
			out = append(out, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Custodians lists everyone who is or was custodian of (kind, id), explicitly
// or through a group rule, most recent first.
func (d *Directory) Custodians(ctx context.Context, kind ResourceKind, id string) ([]Custodian, error) {
	gs, err := d.grants(ctx, d.db, "")
	if err != nil {
		return nil, err
	}
	people := map[string]*personRow{}
	out := []Custodian{}
	for _, g := range gs {
		if g.kind != kind || (g.id != id && g.id != AnyID) {
			continue
		}
		p, ok := people[g.staffID]
		if !ok {
			if p, err = d.loadPerson(ctx, d.db, g.staffID); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			people[g.staffID] = p
		}
		c := Custodian{StaffID: g.staffID, Role: g.role, Via: g.via, Since: g.since, Until: g.until}
		if p != nil {
			c.UserName, c.Status = p.userName, p.status
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Until == nil) != (out[j].Until == nil) {
			return out[i].Until == nil
		}
		return out[i].Since.After(out[j].Since)
	})
	return out, nil
}
