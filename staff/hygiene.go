package staff

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/custos-dev/custos/keys"
)

// HygienePolicy bounds what Hygiene accepts. A zero field turns its check off.
type HygienePolicy struct {
	MaxKeyAge           time.Duration `json:"max_key_age"`
	MaxKeysPerCustodian int           `json:"max_keys_per_custodian"`
}

// DefaultHygienePolicy: keys older than 90 days, or custodians of more than
// ten live keys, are findings.
var DefaultHygienePolicy = HygienePolicy{MaxKeyAge: 90 * 24 * time.Hour, MaxKeysPerCustodian: 10}

// Finding kinds.
const (
	FindingKeyTooOld         = "key_too_old"
	FindingNoLivingCustodian = "no_living_custodian"
	FindingCustodianDeparted = "custodian_departed"
	FindingTooManyKeys       = "too_many_keys"
)

// Finding is one hygiene violation.
type Finding struct {
	Kind   string `json:"kind"`
	KID    string `json:"kid,omitempty"`
	Staff  string `json:"staff,omitempty"`
	Detail string `json:"detail"`
}

// Hygiene checks the live (active and verify-only) keys in ks: keys older
// than p.MaxKeyAge, keys with no living custodian, keys that someone who has
// since departed had access to, and living custodians of more than
// p.MaxKeysPerCustodian live keys. Findings are sorted by kind, kid, staff.
func (d *Directory) Hygiene(ctx context.Context, ks []keys.Key, p HygienePolicy) ([]Finding, error) {
	now := d.now()
	gs, err := d.grants(ctx, d.db, "")
	if err != nil {
		return nil, err
	}
	people := map[string]*personRow{}
	for _, g := range gs {
		if _, ok := people[g.staffID]; ok {
			continue
		}
		pr, err := d.loadPerson(ctx, d.db, g.staffID)
		if err != nil {
			return nil, fmt.Errorf("failed to check hygiene: %w", err)
		}
		people[g.staffID] = pr
	}
	living := func(id string) bool {
		pr := people[id]
		return pr != nil && pr.status == Active && !pr.deleted && pr.active && (pr.end == nil || pr.end.After(now))
	}
	findings := []Finding{}
	perCustodian := map[string]map[string]bool{}
	for _, k := range ks {
		if k.State != keys.Active && k.State != keys.VerifyOnly {
			continue
		}
		if p.MaxKeyAge > 0 && now.Sub(k.CreatedAt) > p.MaxKeyAge {
			findings = append(findings, Finding{Kind: FindingKeyTooOld, KID: k.KID,
				Detail: fmt.Sprintf("created %s, older than %s", k.CreatedAt.UTC().Format(time.RFC3339), p.MaxKeyAge)})
		}
		hasLiving := false
		departed := map[string]bool{}
		for _, g := range gs {
			if !g.covers(k) {
				continue
			}
			if living(g.staffID) {
				if g.until == nil {
					hasLiving = true
					if perCustodian[g.staffID] == nil {
						perCustodian[g.staffID] = map[string]bool{}
					}
					perCustodian[g.staffID][k.KID] = true
				}
			} else if !departed[g.staffID] {
				departed[g.staffID] = true
				pr := people[g.staffID]
				findings = append(findings, Finding{Kind: FindingCustodianDeparted, KID: k.KID, Staff: g.staffID,
					Detail: fmt.Sprintf("%s (%s, via %s) has left but key %s is still %s", pr.userName, pr.kind, g.via, k.KID, k.State)})
			}
		}
		if !hasLiving {
			findings = append(findings, Finding{Kind: FindingNoLivingCustodian, KID: k.KID, Detail: fmt.Sprintf("key %s has no living custodian", k.KID)})
		}
	}
	if p.MaxKeysPerCustodian > 0 {
		for id, set := range perCustodian {
			if len(set) > p.MaxKeysPerCustodian {
				findings = append(findings, Finding{Kind: FindingTooManyKeys, Staff: id,
					Detail: fmt.Sprintf("%s is custodian of %d live keys, more than %d", people[id].userName, len(set), p.MaxKeysPerCustodian)})
			}
		}
	}
	sort.Slice(findings, func(i, j int) bool {
		a, b := findings[i], findings[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.KID != b.KID {
			return a.KID < b.KID
		}
		return a.Staff < b.Staff
	})
	return findings, nil
}
