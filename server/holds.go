package server

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/wire"
)

// Containment holds (blocked sources and countries) are kept in the store, so that they
// survive a restart or a kill, announced to every replica, applied to the
// in-process gateway, and served to standalone gateways as a snapshot and
// a stream (GET /v1/containment, GET /v1/containment/stream).
var holdMigrations = []string{
	`CREATE TABLE containment_holds (
		id TEXT PRIMARY KEY, action TEXT NOT NULL, target TEXT NOT NULL,
		until_ns BIGINT NOT NULL, created_ns BIGINT NOT NULL, body TEXT NOT NULL);
	CREATE INDEX containment_holds_until ON containment_holds(until_ns)`,
	// A hold lifted before its end (DELETE /v1/containment/{id}).
	`ALTER TABLE containment_holds ADD COLUMN released_ns BIGINT;
	ALTER TABLE containment_holds ADD COLUMN release_body TEXT`,
}

// controlHold is the control-feed kind of a new hold.
const controlHold = "containment.hold"

// openHolds migrates the holds table, applies the holds in force to the
// in-process gateway and follows new ones from every replica.
func (s *Server) openHolds(ctx context.Context) error {
	if err := s.DB.Migrate(ctx, "containment", holdMigrations); err != nil {
		return err
	}
	s.OnControl(controlHold, func(raw json.RawMessage) {
		h, err := gateway.ParseHold(raw)
		if err != nil {
			s.Log.Error("containment hold not applied", "err", err)
			return
		}
		s.applyHold(h)
		s.holdFeed.publish(gateway.HoldEvent{Hold: &h})
	})
	s.OnControl(controlRelease, func(raw json.RawMessage) {
		var l struct {
			Release json.RawMessage `json:"release"`
		}
		l.Release = raw
		line, _ := json.Marshal(l)
		r, err := gateway.ParseRelease(line)
		if err != nil {
			s.Log.Error("containment release not applied", "err", err)
			return
		}
		if s.Gateway != nil {
			s.Gateway.Release(r)
		}
		s.holdFeed.publish(gateway.HoldEvent{Release: &r})
	})
	hs, err := s.Holds(ctx)
	if err != nil {
		return err
	}
	for _, h := range hs {
		s.applyHold(h)
	}
	return nil
}

func (s *Server) applyHold(h gateway.Hold) {
	if s.Gateway == nil {
		return
	}
	if err := s.Gateway.Apply(h); err != nil {
		s.Log.Error("containment hold not applied", "id", h.ID, "err", err)
	}
}

// Holds lists the holds in force (not ended, not released), from the store.
func (s *Server) Holds(ctx context.Context) ([]gateway.Hold, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT body FROM containment_holds WHERE until_ns > $1 AND released_ns IS NULL ORDER BY created_ns`, s.now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("failed to read containment holds: %w", err)
	}
	defer rows.Close()
	var out []gateway.Hold
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		h, err := gateway.ParseHold([]byte(body))
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// addHold records h in the audit log and the store, then announces it to
// every replica (which apply it and pass it on to their gateways). A hold
// already recorded is announced again, so a retry completes; one already
// released is left as it is.
func (s *Server) addHold(ctx context.Context, h gateway.Hold) error {
	what := "prefix"
	switch h.Action {
	case gateway.HoldBlockCountry:
		cc, err := h.Country()
		if err != nil {
			return err
		}
		if s.homeCountry(cc) {
			return fmt.Errorf("%w: %s is one of detect.allowed_countries and is never blocked", ErrHomeCountry, cc)
		}
		what = "country"
	default:
		p, err := h.Prefix()
		if err != nil {
			return err
		}
		h.Target = p.Masked().String()
	}
	if h.Created.IsZero() {
		h.Created = s.now().UTC()
	}
	// A hold released by an operator is not placed again by a retry (a
	// queued detector action whose announcement failed): a replica
	// started since would enforce it.
	var released sql.NullInt64
	err := s.DB.QueryRowContext(ctx, `SELECT released_ns FROM containment_holds WHERE id=$1`, h.ID).Scan(&released)
	switch {
	case err == nil && released.Valid:
		return nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("failed to read containment hold: %w", err)
	}
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := s.journal(ctx, "containment."+h.Action, map[string]any{"id": h.ID, what: h.Target, "until": h.Until,
		"reason": h.Reason, "actor": h.Actor, "alert_id": h.AlertID, "rule": h.Rule}); err != nil {
		return err
	}
	if _, err := s.DB.ExecContext(ctx, `INSERT INTO containment_holds (id, action, target, until_ns, created_ns, body) VALUES ($1,$2,$3,$4,$5,$6)
		ON CONFLICT (id) DO NOTHING`, h.ID, h.Action, h.Target, h.Until.UnixNano(), h.Created.UnixNano(), string(body)); err != nil {
		return fmt.Errorf("failed to record containment hold: %w", err)
	}
	return s.Announce(ctx, controlHold, h.ID, h)
}

// blockHold is the hold of a block made without an action record.
func blockHold(p netip.Prefix, until time.Time, reason, actor string) gateway.Hold {
	sum := sha256.Sum256([]byte(p.Masked().String() + "\x00" + until.UTC().Format(time.RFC3339Nano) + "\x00" + reason))
	return gateway.Hold{ID: "blk-" + hex.EncodeToString(sum[:8]), Action: gateway.HoldBlockSource, Target: p.Masked().String(),
		Until: until.UTC(), Reason: reason, Actor: actor}
}

// ErrHomeCountry refuses a country hold on an allowed country: containment
// never cuts the shop off from its own market.
var ErrHomeCountry = errors.New("allowed country")

// homeCountry reports whether cc is one of detect.allowed_countries (KR
// when none is set, as detection takes it).
func (s *Server) homeCountry(cc string) bool {
	allowed := s.Config.Detect.AllowedCountries
	if len(allowed) == 0 {
		allowed = detect.DefaultConfig().ForeignOrigin.Allowed
	}
	for _, a := range allowed {
		if strings.EqualFold(a, cc) {
			return true
		}
	}
	return false
}

// countryHold is the hold of a country block made without an action record.
func countryHold(cc string, until time.Time, reason, actor string) gateway.Hold {
	sum := sha256.Sum256([]byte(cc + "\x00" + until.UTC().Format(time.RFC3339Nano) + "\x00" + reason))
	return gateway.Hold{ID: "blc-" + hex.EncodeToString(sum[:8]), Action: gateway.HoldBlockCountry, Target: cc,
		Until: until.UTC(), Reason: reason, Actor: actor}
}

// listHolds serves GET /v1/containment: the holds in force.
func (s *Server) listHolds(w http.ResponseWriter, r *http.Request) {
	hs, err := s.Holds(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "store_unavailable", "containment state unavailable")
		return
	}
	if hs == nil {
		hs = []gateway.Hold{}
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"holds": hs})
}
