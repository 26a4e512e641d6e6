package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/wire"
)

// An operator lifts a hold before its end with DELETE /v1/containment/{id}
// ?reason=…: journaled (containment.release), recorded in the store (so a
// replica or gateway starting later does not enforce it again), announced
// to every replica and sent on the containment stream.

// controlRelease is the control-feed kind of a release.
const controlRelease = "containment.release"

// maxHoldID bounds a hold id in a release request.
const maxHoldID = 200

// ErrHoldNotFound is a release of a hold that is unknown, already released
// or already ended.
var ErrHoldNotFound = errors.New("no such containment hold in force")

// ParseReleaseRequest reads the query of DELETE /v1/containment/{id}
// strictly: exactly one parameter, reason, given once, held to the bounds
// of a hold's reason (not blank, at most MaxHoldReason bytes, valid UTF-8,
// no control or format character).
func ParseReleaseRequest(rawQuery string) (reason string, err error) {
	bad := func(format string, a ...any) (string, error) {
		return "", fmt.Errorf("%w: %s", ErrBadHoldRequest, fmt.Sprintf(format, a...))
	}
	if len(rawQuery) > maxHoldBody {
		return bad("query longer than %d bytes", maxHoldBody)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	for k := range q {
		if k != "reason" {
			return bad("unknown parameter %q (only reason)", k)
		}
	}
	rs := q["reason"]
	if len(rs) != 1 {
		return bad("reason is required, once")
	}
	if msg := badHoldReason(rs[0]); msg != "" {
		return bad("%s", msg)
	}
	return rs[0], nil
}

// validHoldID reports whether id could name a hold: 1 to maxHoldID bytes
// of letters, digits and . _ : -.
func validHoldID(id string) bool {
	if id == "" || len(id) > maxHoldID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// ReleaseHold lifts the hold id before its end: it is journaled
// (containment.release, with the actor, the reason and the hold), marked
// released in the store, then announced to every replica, which lift it at
// their gateways and send it on the containment stream. A hold unknown,
// ended or already released is ErrHoldNotFound; a release already recorded
// whose announcement failed is announced again first, so a retry completes.
func (s *Server) ReleaseHold(ctx context.Context, id, reason, actor string) (gateway.Release, error) {
	now := s.now().UTC()
	var body string
	var released sql.NullInt64
	var releaseBody sql.NullString
	err := s.DB.QueryRowContext(ctx, `SELECT body, released_ns, release_body FROM containment_holds WHERE id=$1 AND until_ns > $2`,
		id, now.UnixNano()).Scan(&body, &released, &releaseBody)
	if errors.Is(err, sql.ErrNoRows) {
		return gateway.Release{}, ErrHoldNotFound
	}
	if err != nil {
		return gateway.Release{}, fmt.Errorf("failed to read containment hold: %w", err)
	}
	if released.Valid {
		var prev gateway.Release
		if releaseBody.Valid && json.Unmarshal([]byte(releaseBody.String), &prev) == nil {
			if err := s.Announce(ctx, controlRelease, "release-"+id, prev); err != nil {
				return gateway.Release{}, err
			}
		}
		return gateway.Release{}, ErrHoldNotFound
	}
	h, err := gateway.ParseHold([]byte(body))
	if err != nil {
		return gateway.Release{}, err
	}
	rel := gateway.Release{ID: h.ID, Action: h.Action, Target: h.Target, Until: h.Until, Reason: reason, Actor: actor, Released: now}
	what := "prefix"
	if h.Action == gateway.HoldBlockCountry {
		what = "country"
	}
	if err := s.journal(ctx, controlRelease, map[string]any{"id": h.ID, "action": h.Action, what: h.Target,
		"until": h.Until, "reason": reason, "actor": actor, "hold_reason": h.Reason, "hold_actor": h.Actor}); err != nil {
		return gateway.Release{}, err
	}
	rb, err := json.Marshal(rel)
	if err != nil {
		return gateway.Release{}, err
	}
	res, err := s.DB.ExecContext(ctx, `UPDATE containment_holds SET released_ns=$2, release_body=$3 WHERE id=$1 AND released_ns IS NULL`,
		h.ID, now.UnixNano(), string(rb))
	if err != nil {
		return gateway.Release{}, fmt.Errorf("failed to record containment release: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return gateway.Release{}, ErrHoldNotFound // released meanwhile by another request
	}
	if err := s.Announce(ctx, controlRelease, "release-"+h.ID, rel); err != nil {
		return gateway.Release{}, err
	}
	return rel, nil
}

// releaseHoldByHand serves DELETE /v1/containment/{id}?reason=…
func (s *Server) releaseHoldByHand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validHoldID(id) {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "malformed hold id")
		return
	}
	if n, _ := io.ReadFull(io.LimitReader(r.Body, 1), make([]byte, 1)); n > 0 {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "a release takes no body: the reason goes in ?reason=")
		return
	}
	reason, err := ParseReleaseRequest(r.URL.RawQuery)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	rel, err := s.ReleaseHold(r.Context(), id, reason, actorOf(r.Context()))
	if errors.Is(err, ErrHoldNotFound) {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no containment hold "+id+" in force")
		return
	}
	if err != nil {
		s.Log.Error("containment hold not released", "id", id, "err", err)
		wire.WriteError(w, http.StatusServiceUnavailable, "containment_failed", "the release could not be journaled, stored and announced; retry")
		return
	}
	s.Log.Info("containment hold released by hand", "id", id, "action", rel.Action, "target", rel.Target, "actor", rel.Actor)
	wire.WriteJSON(w, http.StatusOK, rel)
}
