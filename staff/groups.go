package staff

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

type groupRow struct {
	id, name, externalID, provider string
	deleted                        bool
	created, modified              time.Time
}

type member struct{ id, userName string }

func scanGroup(sc interface{ Scan(...any) error }) (*groupRow, error) {
	var g groupRow
	var deleted int
	var created, modified int64
	if err := sc.Scan(&g.id, &g.name, &g.externalID, &deleted, &created, &modified, &g.provider); err != nil {
		return nil, err
	}
	g.deleted, g.created, g.modified = deleted != 0, fromNanos(created), fromNanos(modified)
	return &g, nil
}

const groupCols = `id, name, external_id, deleted, created_at, modified_at, provider`

func (d *Directory) loadGroup(ctx context.Context, q querier, id string) (*groupRow, error) {
	g, err := scanGroup(q.QueryRowContext(ctx, `SELECT `+groupCols+` FROM staff_groups WHERE id=$1 AND deleted=0`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("failed to find group %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load group %q: %w", id, err)
	}
	return g, nil
}

func (d *Directory) groupByName(ctx context.Context, q querier, name string) (*groupRow, error) {
	g, err := scanGroup(q.QueryRowContext(ctx, `SELECT `+groupCols+` FROM staff_groups WHERE name_key=$1 AND deleted=0`, nameKey(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("failed to find group %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load group %q: %w", name, err)
	}
	return g, nil
}

func (d *Directory) listGroups(ctx context.Context, q querier) ([]*groupRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+groupCols+` FROM staff_groups WHERE deleted=0 ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("failed to list groups: %w", err)
	}
	defer rows.Close()
	var out []*groupRow
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, fmt.Errorf("failed to list groups: %w", err)
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

func (d *Directory) members(ctx context.Context, q querier, gid string) ([]member, error) {
	rows, err := q.QueryContext(ctx, `SELECT p.id, p.user_name FROM staff_memberships m JOIN staff_people p ON p.id = m.staff_id
		WHERE m.group_id=$1 AND m.left_at IS NULL AND p.deleted=0 ORDER BY p.user_name, p.id`, gid)
	if err != nil {
		return nil, fmt.Errorf("failed to list members of %s: %w", gid, err)
	}
	defer rows.Close()
	var out []member
	for rows.Next() {
		var m member
		if err := rows.Scan(&m.id, &m.userName); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// createGroup inserts a group named name, refusing a duplicate name.
func (d *Directory) createGroup(ctx context.Context, tx *sql.Tx, name, externalID, actor string) (*groupRow, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 256 {
		return nil, fmt.Errorf("%w: displayName must be 1-256 characters", ErrInvalid)
	}
	if _, err := d.groupByName(ctx, tx, name); err == nil {
		return nil, fmt.Errorf("failed to create group %q: %w", name, ErrUniqueness)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	now := d.now()
	g := &groupRow{id: newID(), name: name, externalID: externalID, provider: providerOf(actor), created: now, modified: now}
	if _, err := tx.ExecContext(ctx, `INSERT INTO staff_groups(`+groupCols+`, name_key) VALUES ($1,$2,$3,0,$4,$5,$6,$7)`,
		g.id, g.name, g.externalID, nanos(now), nanos(now), g.provider, nameKey(name)); err != nil {
		return nil, fmt.Errorf("failed to create group %q: %w", name, err)
	}
	return g, d.record(ctx, tx, actor, "group.create", g.id, map[string]any{"name": name})
}

func (d *Directory) ensureGroup(ctx context.Context, tx *sql.Tx, name, actor string) (string, error) {
	g, err := d.groupByName(ctx, tx, name)
	if err == nil {
		return g.id, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	g, err = d.createGroup(ctx, tx, name, "", actor)
	if err != nil {
		return "", err
	}
	return g.id, nil
}

// updateGroup renames g and sets its externalId, refusing a duplicate name.
func (d *Directory) updateGroup(ctx context.Context, tx *sql.Tx, g *groupRow, name, externalID, actor string) error {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 256 {
		return fmt.Errorf("%w: displayName must be 1-256 characters", ErrInvalid)
	}
	if other, err := d.groupByName(ctx, tx, name); err == nil && other.id != g.id {
		return fmt.Errorf("failed to rename group to %q: %w", name, ErrUniqueness)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if name == g.name && externalID == g.externalID {
		return nil
	}
	g.name, g.externalID, g.modified = name, externalID, d.now()
	if _, err := tx.ExecContext(ctx, `UPDATE staff_groups SET name=$2, name_key=$3, external_id=$4, modified_at=$5 WHERE id=$1`,
		g.id, name, nameKey(name), externalID, nanos(g.modified)); err != nil {
		return fmt.Errorf("failed to update group %s: %w", g.id, err)
	}
	return d.record(ctx, tx, actor, "group.update", g.id, map[string]any{"name": name, "external_id": externalID})
}

// addMember adds staffID to gid. A departed person is not added: membership
// would make them a custodian again.
func (d *Directory) addMember(ctx context.Context, tx *sql.Tx, gid, staffID, actor string) error {
	p, err := d.loadPerson(ctx, tx, staffID)
	if err != nil || p.deleted {
		return fmt.Errorf("failed to add member %q: %w: no such user", staffID, ErrInvalid)
	}
	if p.status == Departed {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM staff_memberships WHERE group_id=$1 AND staff_id=$2 AND left_at IS NULL`,
		gid, staffID).Scan(&n); err != nil {
		return fmt.Errorf("failed to read membership: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO staff_memberships(group_id, staff_id, joined_at) VALUES ($1,$2,$3)`,
		gid, staffID, nanos(d.now())); err != nil {
		return fmt.Errorf("failed to add member: %w", err)
	}
	return d.record(ctx, tx, actor, "group.member.add", gid, map[string]any{"staff_id": staffID, "user_name": p.userName})
}

func (d *Directory) removeMember(ctx context.Context, tx *sql.Tx, gid, staffID, actor string) error {
	res, err := tx.ExecContext(ctx, `UPDATE staff_memberships SET left_at=$3 WHERE group_id=$1 AND staff_id=$2 AND left_at IS NULL`,
		gid, staffID, nanos(d.now()))
	if err != nil {
		return fmt.Errorf("failed to remove member: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	return d.record(ctx, tx, actor, "group.member.remove", gid, map[string]any{"staff_id": staffID})
}

// setMembers makes the membership of gid exactly ids.
func (d *Directory) setMembers(ctx context.Context, tx *sql.Tx, gid string, ids []string, actor string) error {
	cur, err := d.members(ctx, tx, gid)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	// An identity provider adds and removes only identities it provisioned.
	if prov := providerOf(actor); prov != "" {
		had := map[string]bool{}
		for _, m := range cur {
			had[m.id] = true
		}
		for _, m := range cur {
			if !want[m.id] {
				if err := d.ownedBy(ctx, tx, m.id, prov); err != nil {
					return err
				}
			}
		}
		for _, id := range ids {
			if !had[id] {
				if err := d.ownedBy(ctx, tx, id, prov); err != nil {
					return err
				}
			}
		}
	}
	for _, m := range cur {
		if !want[m.id] {
			if err := d.removeMember(ctx, tx, gid, m.id, actor); err != nil {
				return err
			}
		}
		delete(want, m.id)
	}
	for _, id := range ids {
		if want[id] {
			if err := d.addMember(ctx, tx, gid, id, actor); err != nil {
				return err
			}
			delete(want, id)
		}
	}
	return nil
}

func (d *Directory) deleteGroup(ctx context.Context, tx *sql.Tx, g *groupRow, actor string) error {
	now := nanos(d.now())
	if _, err := tx.ExecContext(ctx, `UPDATE staff_memberships SET left_at=$2 WHERE group_id=$1 AND left_at IS NULL`, g.id, now); err != nil {
		return fmt.Errorf("failed to end memberships of %s: %w", g.id, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE staff_groups SET deleted=1, modified_at=$2 WHERE id=$1`, g.id, now); err != nil {
		return fmt.Errorf("failed to delete group %s: %w", g.id, err)
	}
	return d.record(ctx, tx, actor, "group.delete", g.id, map[string]any{"name": g.name})
}

// ownedBy returns ErrForbidden unless staff identity id was provisioned by
// the identity provider prov (ErrNotFound for no such identity).
func (d *Directory) ownedBy(ctx context.Context, q querier, id, prov string) error {
	p, err := d.loadPerson(ctx, q, id)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: member %q is no user", ErrInvalid, id)
	}
	if err != nil {
		return err
	}
	if p.provider != prov {
		return fmt.Errorf("identity %s: %w %q", id, ErrForbidden, prov)
	}
	return nil
}
