package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/wire"
)

// DefaultEventRetention is how long access events are kept for forensics
// when no evidence hold stops their deletion.
const DefaultEventRetention = 400 * 24 * time.Hour

// startAudit feeds the audit log what the other parts do: per-second digests
// of issuance, allowed and refused access; alerts; staff lifecycle changes.
// (Key, client and admin changes are appended by their own code paths before
// they take effect: fail closed.)
func (s *Server) startAudit(ctx context.Context) error {
	d, err := audit.NewDigester(s.Audit, s.now)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() error { return d.Close(context.Background()) })
	s.goLoop(func() { d.Run(ctx) })
	evs := s.Bus.Subscribe(1<<14, true)
	s.consume(evs, func() {
		for batch := range evs.C {
			for _, ev := range batch {
				d.Add(ev)
			}
		}
	})
	stop := s.Ledger.Subscribe(func(r ledger.Record) {
		if !r.Revoked {
			d.AddIssuance(ledger.Entry{Hash: r.Hash, ExpiresAt: r.Exp})
		}
	})
	alerts := make(chan detect.Alert, 4096)
	s.Detect.OnAlert(func(a detect.Alert) {
		select {
		case alerts <- a:
		default:
			s.Log.Error("audit: alert queue full; alert not anchored", "alert", a.ID)
		}
	})
	quit := s.quit
	s.goLoop(func() {
		defer stop()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var batch []any
		ctx := context.WithoutCancel(ctx) // ends once detection has drained (quit)
		for {
			select {
			case <-quit:
				// Detection has taken every event: anchor every alert left.
				for n := len(alerts); n > 0; n-- {
					batch = append(batch, <-alerts)
				}
				if len(batch) > 0 {
					actx, cancel := context.WithTimeout(ctx, drainTimeout)
					defer cancel()
					if err := s.Audit.AppendMany(actx, "alert", batch); err != nil {
						s.Log.Error("audit: alerts not anchored at shutdown", "alerts", len(batch), "err", err)
					}
				}
				return
			case a := <-alerts:
				batch = append(batch, a)
				continue
			case <-t.C:
			}
			if len(batch) > 0 {
				if err := s.Audit.AppendMany(ctx, "alert", batch); err != nil && ctx.Err() == nil {
					s.Log.Error("audit: failed to anchor alerts", "err", err)
					continue // keep the batch; try again next second
				}
				batch = nil
			}
			if err := s.anchorStaffChanges(ctx); err != nil && ctx.Err() == nil {
				s.Log.Error("audit: failed to anchor staff changes", "err", err)
			}
		}
	})
	return nil
}

// anchorStaffChanges appends staff lifecycle changes not yet in the log. The
// last anchored sequence number is kept in DATA/audit-staff-cursor, written
// after the entries are durable (a crash between the two repeats a few).
func (s *Server) anchorStaffChanges(ctx context.Context) error {
	path := filepath.Join(s.Config.Data, "audit-staff-cursor")
	var after int64
	if b, err := os.ReadFile(path); err == nil {
		after, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	cs, err := s.Staff.Changes(ctx, after, 1000)
	if err != nil || len(cs) == 0 {
		return err
	}
	vs := make([]any, len(cs))
	for i, c := range cs {
		vs[i] = c
	}
	if err := s.Audit.AppendMany(ctx, "staff.change", vs); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(cs[len(cs)-1].Seq, 10)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// retainEvents deletes access-event partitions older than the retention,
// except while any evidence hold is placed.
func (s *Server) retainEvents(ctx context.Context) error {
	holds, err := s.Audit.Holds()
	if err != nil {
		return fmt.Errorf("failed to read evidence holds: %w", err)
	}
	st, err := forensics.Open(filepath.Join(s.Config.Data, EventsDir))
	if err != nil {
		return err
	}
	defer st.Close()
	held := func(time.Time) bool { return len(holds) > 0 }
	_, err = st.Retain(ctx, s.now().Add(-DefaultEventRetention), held)
	return err
}

type holdBody struct {
	Reason string `json:"reason"`
}

// holdIncident places an evidence hold for an incident: from then on
// retention deletes neither audit data nor event partitions.
func (s *Server) holdIncident(w http.ResponseWriter, r *http.Request) {
	var b holdBody
	if err := wire.Decode(r.Body, &b); err != nil || strings.TrimSpace(b.Reason) == "" {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "a JSON body with a reason is required")
		return
	}
	id := r.PathValue("id")
	if _, ok := s.Detect.Incident(id); !ok {
		wire.WriteError(w, http.StatusNotFound, "not_found", "no such incident")
		return
	}
	if err := s.Audit.Hold(r.Context(), "incident:"+id, b.Reason+" (by "+actorOf(r.Context())+")"); err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "audit_unavailable", err.Error())
		return
	}
	holds, _ := s.Audit.Holds()
	wire.WriteJSON(w, http.StatusOK, map[string]any{"holds": holds})
}

func (s *Server) releaseIncident(w http.ResponseWriter, r *http.Request) {
	if err := s.Audit.Release(r.Context(), "incident:"+r.PathValue("id")); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, audit.ErrNotFound) {
			status = http.StatusNotFound
		}
		wire.WriteError(w, status, "release_failed", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
