package console

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/audit"
	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/staff"
)

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"tsp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04Z")
	},
	"tss":     func(t time.Time) string { return t.UTC().Format("01-02 15:04:05") },
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"dur":     humanDuration,
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"pct": func(a, b time.Duration) int {
		if b <= 0 {
			return 0
		}
		return int(min(100, 100*a/b))
	},
	"join": strings.Join,
	"sub":  func(a, b int) int { return a - b },
}

// humanDuration writes d as the two largest units ("3d 4h", "12m 5s").
func humanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	days := d / (24 * time.Hour)
	h := d % (24 * time.Hour) / time.Hour
	m := d % time.Hour / time.Minute
	s := d % time.Minute / time.Second
	var out string
	switch {
	case days > 0:
		out = fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		out = fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		out = fmt.Sprintf("%dm %ds", m, s)
	default:
		out = fmt.Sprintf("%ds", s)
	}
	if neg {
		return "-" + out
	}
	return out
}

// ---- Overview

type overviewView struct {
	Requests, Issuance series
	Totals             overviewTotals
	LiveTokens         int
	HasLedger          bool
	AuditSize          uint64
	AuditErr           string
	Checkpoint         checkpointView
	OpenIncidents      int
	Alerts             int
}

type checkpointView struct {
	Origin   string
	Size     uint64
	Root     string
	Verified bool
	Err      string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	v := overviewView{}
	v.Requests, v.Issuance, v.Totals = c.traffic.snapshot()
	if c.cfg.LiveTokens != nil {
		v.LiveTokens, v.HasLedger = c.cfg.LiveTokens(), true
	}
	if n, err := c.cfg.Audit.Size(r.Context()); err != nil {
		v.AuditErr = err.Error()
	} else {
		v.AuditSize = n
	}
	v.Checkpoint = c.checkpoint(r)
	v.Alerts = len(c.cfg.Detect.Alerts())
	v.OpenIncidents = len(c.cfg.Detect.Incidents())
	c.render(w, r, http.StatusOK, "overview.html", "Overview", v)
}

func (c *Console) checkpoint(r *http.Request) checkpointView {
	raw, err := c.cfg.Audit.Checkpoint(r.Context())
	if err != nil {
		return checkpointView{Err: err.Error()}
	}
	if c.cfg.CheckpointVerifier != nil {
		cp, err := audit.ParseCheckpoint(raw, c.cfg.CheckpointVerifier)
		if err != nil {
			return checkpointView{Err: "checkpoint does not verify: " + err.Error()}
		}
		return checkpointView{Origin: cp.Origin, Size: cp.Size, Root: fmt.Sprintf("%x", cp.Hash), Verified: true}
	}
	return parseCheckpointBody(raw)
}

// parseCheckpointBody reads origin, size and root hash from a checkpoint
// note without checking its signature.
func parseCheckpointBody(raw []byte) checkpointView {
	lines := strings.SplitN(string(raw), "\n", 4)
	if len(lines) < 3 {
		return checkpointView{Err: "malformed checkpoint"}
	}
	var size uint64
	if _, err := fmt.Sscanf(lines[1], "%d", &size); err != nil {
		return checkpointView{Err: "malformed checkpoint size"}
	}
	return checkpointView{Origin: lines[0], Size: size, Root: lines[2]}
}

// ---- Keys

type keyRow struct {
	keys.Key
	Age        time.Duration
	OverAge    bool
	Live       bool
	Custodians []custodianRow
	Orphaned   bool // live key with no employed custodian
}

type custodianRow struct {
	staff.Custodian
	Employed bool
	Current  bool
}

type keysView struct {
	Keys         []keyRow
	Policy       keys.Policy
	LastRotation time.Time
	Flash        string
}

func live(k keys.Key) bool { return k.State == keys.Active || k.State == keys.VerifyOnly }

func (c *Console) keyRows(r *http.Request) ([]keyRow, error) {
	ks, err := c.cfg.Keys.List(r.Context())
	if err != nil {
		return nil, err
	}
	now := c.now()
	rows := make([]keyRow, 0, len(ks))
	for _, k := range ks {
		row := keyRow{Key: k, Age: now.Sub(k.CreatedAt), Live: live(k)}
		row.OverAge = row.Live && row.Age > c.cfg.Policy.MaxKeyAge
		cs, err := c.cfg.Staff.Custodians(r.Context(), staff.SigningKey, k.KID)
		if err != nil {
			return nil, err
		}
		employed := 0
		for _, cu := range cs {
			cr := custodianRow{Custodian: cu, Employed: cu.Status == staff.Active, Current: cu.Until == nil}
			if cr.Employed && cr.Current {
				employed++
			}
			row.Custodians = append(row.Custodians, cr)
		}
		row.Orphaned = row.Live && employed == 0
		rows = append(rows, row)
	}
	return rows, nil
}

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request) {
	rows, err := c.keyRows(r)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list keys", err)
		return
	}
	v := keysView{Keys: rows, Policy: c.cfg.Policy, Flash: r.URL.Query().Get("done")}
	for _, k := range rows {
		if k.State == keys.Active {
			v.LastRotation = k.CreatedAt
		}
	}
	c.render(w, r, http.StatusOK, "keys.html", "Keys", v)
}

type confirmView struct {
	Action string // "rotate" or "revoke"
	Key    *keys.Key
	Active *keys.Key
	Error  string
	Reason string
}

func (c *Console) findKey(r *http.Request, kid string) (*keys.Key, *keys.Key, error) {
	ks, err := c.cfg.Keys.List(r.Context())
	if err != nil {
		return nil, nil, err
	}
	var found, active *keys.Key
	for i := range ks {
		if ks[i].KID == kid {
			found = &ks[i]
		}
		if ks[i].State == keys.Active && active == nil {
			active = &ks[i]
		}
	}
	return found, active, nil
}

func (c *Console) rotateConfirm(w http.ResponseWriter, r *http.Request) {
	_, active, err := c.findKey(r, "")
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list keys", err)
		return
	}
	c.render(w, r, http.StatusOK, "confirm.html", "Rotate the signing key", confirmView{Action: "rotate", Active: active})
}

func (c *Console) rotate(w http.ResponseWriter, r *http.Request) {
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" || r.PostFormValue("confirm") != "yes" {
		_, active, _ := c.findKey(r, "")
		c.render(w, r, http.StatusBadRequest, "confirm.html", "Rotate the signing key",
			confirmView{Action: "rotate", Active: active, Reason: reason, Error: "Give a reason and tick the confirmation."})
		return
	}
	actor := sessionOf(r.Context()).StaffID
	k, err := c.cfg.Keys.Rotate(r.Context(), actor, "console: "+reason)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "rotation failed", err)
		return
	}
	c.log.Info("key rotated from the console", "kid", k.KID, "actor", actor)
	http.Redirect(w, r, Prefix+"/keys?done=rotated+to+"+k.KID, http.StatusSeeOther)
}

func (c *Console) revokeConfirm(w http.ResponseWriter, r *http.Request) {
	k, _, err := c.findKey(r, r.PathValue("kid"))
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list keys", err)
		return
	}
	if k == nil {
		c.fail(w, r, http.StatusNotFound, "no such key", nil)
		return
	}
	c.render(w, r, http.StatusOK, "confirm.html", "Revoke key "+k.KID, confirmView{Action: "revoke", Key: k})
}

func (c *Console) revoke(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	k, _, err := c.findKey(r, kid)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list keys", err)
		return
	}
	if k == nil {
		c.fail(w, r, http.StatusNotFound, "no such key", nil)
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" || r.PostFormValue("confirm_kid") != kid {
		c.render(w, r, http.StatusBadRequest, "confirm.html", "Revoke key "+kid,
			confirmView{Action: "revoke", Key: k, Reason: reason, Error: "Give a reason and type the key id to confirm."})
		return
	}
	actor := sessionOf(r.Context()).StaffID
	if err := c.cfg.Keys.Revoke(r.Context(), kid, actor, "console: "+reason); err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "revocation failed", err)
		return
	}
	c.log.Info("key revoked from the console", "kid", kid, "actor", actor)
	http.Redirect(w, r, Prefix+"/keys?done=revoked+"+kid, http.StatusSeeOther)
}

// ---- Staff

type personRow struct {
	staff.Person
	Keys      []string
	Clients   []authority.Client
	Departed  bool
	Uncleared bool // departed but still holding custody
}

func (c *Console) staffPage(w http.ResponseWriter, r *http.Request) {
	people, err := c.cfg.Staff.People(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list staff", err)
		return
	}
	ks, err := c.cfg.Keys.List(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "failed to list keys", err)
		return
	}
	held := map[string][]string{}
	for _, k := range ks {
		if !live(k) {
			continue
		}
		cs, err := c.cfg.Staff.Custodians(r.Context(), staff.SigningKey, k.KID)
		if err != nil {
			c.fail(w, r, http.StatusInternalServerError, "failed to list custodians", err)
			return
		}
		for _, cu := range cs {
			if cu.Until == nil && !slices.Contains(held[cu.StaffID], k.KID) {
				held[cu.StaffID] = append(held[cu.StaffID], k.KID)
			}
		}
	}
	clients := map[string][]authority.Client{}
	for _, cl := range c.cfg.Credentials.Clients() {
		if cl.RevokedAt == nil && cl.HeldBy != "" {
			clients[cl.HeldBy] = append(clients[cl.HeldBy], cl)
		}
	}
	rows := make([]personRow, 0, len(people))
	for _, p := range people {
		row := personRow{Person: p, Keys: held[p.ID], Clients: clients[p.ID], Departed: p.Status != staff.Active}
		row.Uncleared = row.Departed && (len(row.Keys) > 0 || len(row.Clients) > 0)
		rows = append(rows, row)
	}
	// Departed people still holding custody first, then departed, then the rest.
	slices.SortStableFunc(rows, func(a, b personRow) int {
		rank := func(p personRow) int {
			switch {
			case p.Uncleared:
				return 0
			case p.Departed:
				return 1
			}
			return 2
		}
		return cmp.Compare(rank(a), rank(b))
	})
	c.render(w, r, http.StatusOK, "staff.html", "Staff", rows)
}
