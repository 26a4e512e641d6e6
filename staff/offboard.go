package staff

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/custos-dev/custos/keys"
)

type offboarding struct {
	id, staffID, reason string
	departed            time.Time
	attempts            int
}

// Sweep departs everyone whose end date has passed, offboards every
// departure not yet offboarded, and revokes the keys whose grace period under
// PolicyGrace has run out. Failures are returned joined; the next sweep
// retries them.
func (d *Directory) Sweep(ctx context.Context) error {
	now := d.now()
	due, err := d.queryPeople(ctx, d.db, `status=$1 AND deleted=0 AND end_at IS NOT NULL AND end_at <= $2`, string(Active), nanos(now))
	if err != nil {
		return fmt.Errorf("failed to sweep: %w", err)
	}
	var errs []error
	for _, p := range due {
		err := d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
			cur, err := d.loadPerson(ctx, tx, p.id)
			if err != nil || cur.status != Active {
				return err
			}
			return d.depart(ctx, tx, st, cur, *cur.end, "contract ended", OffboardingActor)
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.offboardPending(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := d.revokeDue(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run sweeps at once and then every SweepInterval until ctx ends.
func (d *Directory) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := d.Sweep(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("staff sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// offboardPending offboards every queued departure. It is serialised so
// that a sweep and a SCIM deactivation never rotate twice for one departure.
func (d *Directory) offboardPending(ctx context.Context) error {
	d.offMu.Lock()
	defer d.offMu.Unlock()
	rows, err := d.db.QueryContext(ctx, `SELECT id, staff_id, reason, departed_at, attempts FROM staff_offboardings WHERE done_at IS NULL ORDER BY departed_at, id`)
	if err != nil {
		return fmt.Errorf("failed to list pending offboardings: %w", err)
	}
	var pending []offboarding
	for rows.Next() {
		var o offboarding
		var at int64
		if err := rows.Scan(&o.id, &o.staffID, &o.reason, &at, &o.attempts); err != nil {
			rows.Close()
			return fmt.Errorf("failed to list pending offboardings: %w", err)
		}
		o.departed = fromNanos(at)
		pending = append(pending, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, o := range pending {
		if err := d.offboard(ctx, o); err != nil {
			errs = append(errs, err)
			if _, uerr := d.db.ExecContext(ctx, `UPDATE staff_offboardings SET attempts=attempts+1, last_error=$2 WHERE id=$1`, o.id, err.Error()); uerr != nil {
				errs = append(errs, uerr)
			}
			d.alert(ctx, RuleOffboardingFailed, "critical", o.staffID,
				fmt.Sprintf("offboarding of departed staff %s failed (attempt %d), retrying every sweep: %v", o.staffID, o.attempts+1, err))
		}
	}
	return errors.Join(errs...)
}

// offboard rotates and revokes the keys the person ever had access to,
// revokes what they held, and raises the departure alert.
func (d *Directory) offboard(ctx context.Context, o offboarding) error {
	p, err := d.loadPerson(ctx, d.db, o.staffID)
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("custodian %s (%s) departed: %s", p.userName, p.id, o.reason)
	gs, err := d.grants(ctx, d.db, p.id)
	if err != nil {
		return err
	}
	var keyGrants, clients []string
	seenClient := map[string]bool{}
	for _, g := range gs {
		if g.kind == ClientSecret && g.id != AnyID && !seenClient[g.id] {
			seenClient[g.id] = true
			clients = append(clients, g.id)
		}
		if g.kind == SigningKey {
			keyGrants = append(keyGrants, g.id)
		}
	}
	done := map[string]any{"staff_id": p.id, "user_name": p.userName, "departed_at": o.departed, "policy": d.cfg.Policy}
	if len(keyGrants) > 0 {
		if d.cfg.Keys == nil {
			return fmt.Errorf("failed to offboard %s: %w", p.id, ErrNoKeyOps)
		}
		ks, err := d.cfg.Keys.List(ctx)
		if err != nil {
			return fmt.Errorf("failed to list keys offboarding %s: %w", p.id, err)
		}
		var affected []keys.Key
		needRotate := false
		for _, k := range ks {
			if k.State != keys.Active && k.State != keys.VerifyOnly {
				continue
			}
			for _, g := range gs {
				if g.covers(k) {
					affected = append(affected, k)
					needRotate = needRotate || k.State == keys.Active
					break
				}
			}
		}
		if needRotate {
			nk, err := d.cfg.Keys.Rotate(ctx, OffboardingActor, reason)
			if err != nil {
				return fmt.Errorf("failed to rotate keys offboarding %s: %w", p.id, err)
			}
			done["rotated_to"] = nk.KID
			if err := d.inheritCustody(ctx, affected, nk.KID, p.id); err != nil {
				return err
			}
		}
		var revoked, scheduled []string
		for _, k := range affected {
			if d.cfg.Policy == PolicyGrace {
				due := o.departed.Add(d.cfg.MaxTokenTTL)
				if _, err := d.db.ExecContext(ctx, `INSERT INTO staff_revocations(kid, staff_id, due_at, reason) VALUES ($1,$2,$3,$4)
					ON CONFLICT (kid) DO NOTHING`, k.KID, p.id, nanos(due), reason); err != nil {
					return fmt.Errorf("failed to schedule revocation of %s: %w", k.KID, err)
				}
				scheduled = append(scheduled, k.KID)
				continue
			}
			if err := d.cfg.Keys.Revoke(ctx, k.KID, OffboardingActor, reason); err != nil && !errors.Is(err, keys.ErrNotFound) {
				return fmt.Errorf("failed to revoke %s offboarding %s: %w", k.KID, p.id, err)
			}
			revoked = append(revoked, k.KID)
		}
		done["revoked"], done["revoke_scheduled"] = revoked, scheduled
	}
	n := 0
	for _, cr := range d.cfg.Credentials {
		c, err := cr.RevokeHeldBy(ctx, p.id, OffboardingActor, reason)
		if err != nil {
			return fmt.Errorf("failed to revoke credentials of %s: %w", p.id, err)
		}
		n += c
	}
	if ac, ok := d.cfg.Guard.(adminCounter); ok && n > 0 {
		if live, err := ac.LiveAdmins(ctx); err == nil && live == 0 {
			d.alert(ctx, RuleNoAdminCredential, "critical", p.id, fmt.Sprintf(
				"the departure of %s (%s) revoked the last admin credential; to make a new one, remove DATA/admin-token and restart custos serve", p.userName, o.reason))
		}
	}
	if len(clients) > 0 {
		if d.cfg.Clients == nil {
			return fmt.Errorf("failed to offboard %s: no client revoker for secrets %s: %w", p.id, strings.Join(clients, ","), ErrInvalid)
		}
		for _, c := range clients {
			if err := d.cfg.Clients.RevokeClientSecret(ctx, c, OffboardingActor, reason); err != nil {
				return fmt.Errorf("failed to revoke secret of client %s: %w", c, err)
			}
		}
	}
	done["credentials_revoked"], done["client_secrets_revoked"] = n, clients
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to record offboarding: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE staff_offboardings SET done_at=$2, attempts=attempts+1, last_error='' WHERE id=$1`, o.id, nanos(d.now())); err != nil {
		return fmt.Errorf("failed to record offboarding: %w", err)
	}
	if err := d.record(ctx, tx, OffboardingActor, "person.offboard", p.id, done); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to record offboarding: %w", err)
	}
	d.alert(ctx, RuleStaffDeparted, "high", p.id, fmt.Sprintf("%s departed (%s); keys rotated %v, revoked %v, revocation scheduled %v; %d credentials and %d client secrets revoked",
		p.userName, o.reason, done["rotated_to"], done["revoked"], done["revoke_scheduled"], n, len(clients)))
	return nil
}

// inheritCustody makes the living explicit custodians of the rotated-out keys
// custodians of the key that replaced them, so the new key is not orphaned.
// departed is never carried over, nor anyone who has left.
func (d *Directory) inheritCustody(ctx context.Context, from []keys.Key, kid, departed string) error {
	return d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
		for _, k := range from {
			if k.KID == kid {
				continue
			}
			rows, err := tx.QueryContext(ctx, `SELECT DISTINCT c.staff_id, c.role FROM staff_custodians c JOIN staff_people p ON p.id = c.staff_id
				WHERE c.resource_kind=$1 AND c.resource_id=$2 AND c.removed_at IS NULL AND p.status=$3 AND p.deleted=0 AND p.active=1
				AND (p.end_at IS NULL OR p.end_at > $5) AND c.staff_id<>$4`,
				string(SigningKey), k.KID, string(Active), departed, nanos(d.now()))
			if err != nil {
				return fmt.Errorf("failed to read custodians of %s: %w", k.KID, err)
			}
			type sr struct{ id, role string }
			var heirs []sr
			for rows.Next() {
				var h sr
				if err := rows.Scan(&h.id, &h.role); err != nil {
					rows.Close()
					return err
				}
				heirs = append(heirs, h)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, h := range heirs {
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM staff_custodians WHERE resource_kind=$1 AND resource_id=$2
					AND staff_id=$3 AND role=$4 AND removed_at IS NULL`, string(SigningKey), kid, h.id, h.role).Scan(&n); err != nil {
					return fmt.Errorf("failed to read custodians of %s: %w", kid, err)
				}
				if n > 0 {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO staff_custodians(resource_kind, resource_id, staff_id, role, granted_at, granted_by)
					VALUES ($1,$2,$3,$4,$5,$6)`, string(SigningKey), kid, h.id, h.role, nanos(d.now()), InheritActor); err != nil {
					return fmt.Errorf("failed to carry custodian over to %s: %w", kid, err)
				}
				if err := d.record(ctx, tx, InheritActor, "custodian.add", string(SigningKey)+":"+kid,
					map[string]any{"staff_id": h.id, "role": h.role, "from": k.KID}); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// InheritActor attributes custodianships carried over to a rotated key.
const InheritActor = "system:rotation"

// Inherit makes the living explicit custodians of key from custodians of
// key to, which replaced it in a rotation (any rotation: scheduled, manual,
// offboarding). Someone who has departed is never carried over.
func (d *Directory) Inherit(ctx context.Context, from, to string) error {
	return d.inheritCustody(ctx, []keys.Key{{KID: from}}, to, "")
}

// revokeDue revokes keys whose PolicyGrace period has ended.
func (d *Directory) revokeDue(ctx context.Context) error {
	d.offMu.Lock()
	defer d.offMu.Unlock()
	rows, err := d.db.QueryContext(ctx, `SELECT kid, reason FROM staff_revocations WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at, kid`, nanos(d.now()))
	if err != nil {
		return fmt.Errorf("failed to list due revocations: %w", err)
	}
	type due struct{ kid, reason string }
	var list []due
	for rows.Next() {
		var x due
		if err := rows.Scan(&x.kid, &x.reason); err != nil {
			rows.Close()
			return err
		}
		list = append(list, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, x := range list {
		if d.cfg.Keys == nil {
			return fmt.Errorf("failed to revoke %s: %w", x.kid, ErrNoKeyOps)
		}
		if err := d.cfg.Keys.Revoke(ctx, x.kid, OffboardingActor, x.reason+" (grace period over)"); err != nil && !errors.Is(err, keys.ErrNotFound) {
			errs = append(errs, fmt.Errorf("failed to revoke %s: %w", x.kid, err))
			d.alert(ctx, RuleOffboardingFailed, "critical", x.kid, fmt.Sprintf("revocation of %s after its grace period failed: %v", x.kid, err))
			continue
		}
		err := d.withTx(ctx, func(tx *sql.Tx, st *txState) error {
			if _, err := tx.ExecContext(ctx, `UPDATE staff_revocations SET done_at=$2 WHERE kid=$1`, x.kid, nanos(d.now())); err != nil {
				return err
			}
			return d.record(ctx, tx, OffboardingActor, "key.revoke", x.kid, map[string]any{"reason": x.reason, "grace_over": true})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("failed to record revocation of %s: %w", x.kid, err))
		}
	}
	return errors.Join(errs...)
}

// CheckActor is called whenever a credential bound to staffID is used. It
// returns ErrDeparted, and raises a critical departed_credential_use alert,
// if they have departed or their end date has passed; ErrNotFound for an
// identity the directory does not know. Only a nil error allows the action.
func (d *Directory) CheckActor(ctx context.Context, staffID string) error {
	p, err := d.loadPerson(ctx, d.db, staffID)
	if err != nil {
		return err
	}
	now := d.now()
	if p.status == Departed || p.deleted || !p.active || (p.end != nil && !p.end.After(now)) {
		d.alert(ctx, RuleDepartedCredentialUse, "critical", p.id,
			fmt.Sprintf("credential of departed staff %s (%s) was used", p.userName, p.id))
		return fmt.Errorf("refused %s: %w", p.id, ErrDeparted)
	}
	return nil
}

// pendingOffboardings lists staff ids still waiting to be offboarded.
func (d *Directory) pendingOffboardings(ctx context.Context) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT staff_id FROM staff_offboardings WHERE done_at IS NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, rows.Err()
}
