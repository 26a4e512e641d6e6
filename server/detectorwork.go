package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/gateway"
)

// Work detector processes leave in the shared store (detect/queue.go):
// containment actions to carry out and alerts to append to the audit log.
// Every authority on PostgreSQL polls both queues; each row is claimed by
// one of them under a lease, carried out, then marked done. A row whose
// claimant was killed is claimed again once its lease ends.
const (
	workPoll  = 200 * time.Millisecond
	workLease = 15 * time.Second // longer than an action's timeout below
	// actionTimeout bounds one action (a hold recorded and announced, a
	// key or client revoked).
	actionTimeout   = 10 * time.Second
	maxWorkAttempts = 8
)

// workOwner names this process as a claimant: host, pid and a random part.
func workOwner() string {
	h, _ := os.Hostname()
	var r [4]byte
	rand.Read(r[:])
	return fmt.Sprintf("%s/%d/%s", h, os.Getpid(), hex.EncodeToString(r[:]))
}

// startDetectorWork polls the work queues until ctx ends (PostgreSQL only:
// detector processes exist only in a scale-out deployment).
func (s *Server) startDetectorWork(ctx context.Context) error {
	if s.DB.Dialect != "postgres" {
		return nil
	}
	actions, err := detect.NewWorkQueue(ctx, s.DB, detect.ActionQueue)
	if err != nil {
		return err
	}
	alerts, err := detect.NewWorkQueue(ctx, s.DB, detect.AuditQueue)
	if err != nil {
		return err
	}
	owner := workOwner()
	s.goLoop(func() {
		t := time.NewTicker(workPoll)
		defer t.Stop()
		for {
			if err := s.carryQueuedActions(ctx, actions, owner); err != nil && ctx.Err() == nil {
				s.Log.Error("detector actions not carried out", "err", err)
			}
			if err := s.auditQueuedAlerts(ctx, alerts, owner); err != nil && ctx.Err() == nil {
				s.Log.Error("detector alerts not appended to the audit log", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// carryQueuedActions claims due actions and carries each out through this
// authority's containment, as if its own detection had raised it.
func (s *Server) carryQueuedActions(ctx context.Context, q *detect.WorkQueue, owner string) error {
	cs, err := q.Claim(ctx, owner, workLease, 32)
	if err != nil {
		return err
	}
	for _, c := range cs {
		r, err := detect.ParseQueuedAction(c.Body)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, actionTimeout)
			err = containment{s}.Carry(actx, r)
			cancel()
		}
		switch {
		case err == nil:
			s.Log.Info("detector action carried out", "id", c.ID, "action", r.Action, "target", r.Target)
			err = q.Done(ctx, c.ID, owner)
		case permanent(err) || c.Attempts >= maxWorkAttempts:
			s.Log.Error("detector action not carried out", "id", c.ID, "attempts", c.Attempts, "err", err)
			err = errors.Join(q.Fail(ctx, c.ID, owner, err), detect.RecordOutcome(ctx, s.DB, r, err))
		default:
			s.Log.Warn("detector action failed; retrying", "id", c.ID, "attempts", c.Attempts, "err", err)
			err = q.Retry(ctx, c.ID, owner, err, time.Now().Add(backoff(c.Attempts)))
		}
		if err != nil && !errors.Is(err, detect.ErrLeaseLost) {
			return err
		}
	}
	return nil
}

// permanent reports errors a retry does not cure: among them a country
// hold on one of detect.allowed_countries and a hold whose target does not
// parse, which would be refused the same way on every attempt.
func permanent(err error) bool {
	return errors.Is(err, ErrUnsupported) || errors.Is(err, detect.ErrNoTarget) || errors.Is(err, detect.ErrCannotSuspend) ||
		errors.Is(err, detect.ErrWeakEvidence) || errors.Is(err, detect.ErrBadQueuedAction) ||
		errors.Is(err, ErrHomeCountry) || errors.Is(err, gateway.ErrBadHold)
}

func backoff(attempt int) time.Duration {
	return min(time.Second<<min(attempt, 6), time.Minute)
}

// auditQueuedAlerts claims due alerts and appends them to the audit log as
// "alert" entries, like this authority's own alerts, before marking them done.
func (s *Server) auditQueuedAlerts(ctx context.Context, q *detect.WorkQueue, owner string) error {
	if s.Audit == nil {
		return nil
	}
	cs, err := q.Claim(ctx, owner, workLease, 256)
	if err != nil || len(cs) == 0 {
		return err
	}
	vs := make([]any, 0, len(cs))
	ok := cs[:0]
	for _, c := range cs {
		if !json.Valid(c.Body) {
			if err := q.Fail(ctx, c.ID, owner, errors.New("alert body is not JSON")); err != nil && !errors.Is(err, detect.ErrLeaseLost) {
				return err
			}
			continue
		}
		vs = append(vs, json.RawMessage(c.Body))
		ok = append(ok, c)
	}
	if cs = ok; len(cs) == 0 {
		return nil
	}
	if err := s.Audit.AppendMany(ctx, "alert", vs); err != nil {
		for _, c := range cs {
			q.Retry(ctx, c.ID, owner, err, time.Now().Add(time.Second))
		}
		return err
	}
	for _, c := range cs {
		if err := q.Done(ctx, c.ID, owner); err != nil && !errors.Is(err, detect.ErrLeaseLost) {
			return err
		}
	}
	return nil
}
