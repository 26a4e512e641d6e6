package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSimulateAttackerMatrix runs simulate coupang --attacker through the
// command line: bad variant names and parameters are usage errors, and the
// JSON matrix has a row per variant and world with the false alarms as a
// count (rate null) below 10 M normal requests.
func TestSimulateAttackerMatrix(t *testing.T) {
	out, code := runCLI(t, "simulate", "coupang", "--scale", "0.0001", "--quiet", "--no-scope", "--json",
		"--attacker", "Distributed, low-and-slow", "--worlds", "observe", "--mode", "events",
		"--members-per-source", "3", "--slow-every", "5s", "--attack-rate", "20")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var m struct {
		Matrix []struct {
			Attacker       string   `json:"attacker"`
			World          string   `json:"world"`
			FirstBehaviour *float64 `json:"first_behaviour_alert_delay_seconds"`
			Per10M         *float64 `json:"false_alarms_per_10m"`
			Normal         int64    `json:"normal_requests"`
			Served, Sent   int64
		} `json:"matrix"`
		Reports []struct {
			Attacker string `json:"attacker"`
		} `json:"reports"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(m.Matrix) != 4 || len(m.Reports) != 2 || m.Reports[0].Attacker != "distributed" || m.Reports[1].Attacker != "low-and-slow" {
		t.Fatalf("matrix %+v, reports %+v: want 2 variants × (baseline, observe)", m.Matrix, m.Reports)
	}
	for _, r := range m.Matrix {
		if r.Per10M != nil || r.Normal == 0 || r.Normal >= 10_000_000 {
			t.Errorf("%s/%s: rate %v over %d normal requests, want null below 10 M", r.Attacker, r.World, r.Per10M, r.Normal)
		}
		if strings.HasPrefix(r.World, "custos") && (r.FirstBehaviour == nil || *r.FirstBehaviour > 300) {
			t.Errorf("%s/%s: first behaviour alert %v s, want within 300 s", r.Attacker, r.World, r.FirstBehaviour)
		}
	}
	// Slice flags keep their values between runs of the same process, so
	// the refusals run last (each still names a bad value).
	for _, args := range [][]string{
		{"--attacker", "stolen-keys"},
		{"--attacker", ""},
		{"--attacker", "distributed", "--members-per-source", "0"},
		{"--attacker", "low-and-slow", "--slow-every", "0s"},
		{"--attacker", "stolen-client-secret", "--attack-rate", "-1"},
		{"--attacker", "distributed", "--mode", "https"},
	} {
		out, code := runCLI(t, append([]string{"simulate", "coupang", "--scale", "0.0001", "--quiet", "--no-scope"}, args...)...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, out)
		}
	}
}

// TestSimulateHTTPWorlds runs simulate coupang --mode http with two custos
// worlds, each a replay of its own: one row per world, the observe +
// containment world contained, no containment before the attack's start;
// a world http mode cannot replay is a usage error.
func TestSimulateHTTPWorlds(t *testing.T) {
	if testing.Short() {
		t.Skip("HTTP replay skipped in -short mode")
	}
	out, code := runCLI(t, "simulate", "coupang", "--scale", "0.00002", "--quiet", "--json", "--mode", "http",
		"--attacker", "stolen-key", "--worlds", "custos,observe")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var m struct {
		Matrix []struct {
			World       string   `json:"world"`
			Rule        string   `json:"first_alert_rule"`
			Containment *float64 `json:"containment_seconds"`
			Records     int64    `json:"records_exposed"`
			On          bool     `json:"containment_on"`
		} `json:"matrix"`
		Goals []struct {
			Goal string `json:"goal"`
			Met  bool   `json:"met"`
		} `json:"goals"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(m.Matrix) != 3 || m.Matrix[0].World != "baseline (http)" || m.Matrix[1].World != "custos (http)" ||
		m.Matrix[2].World != "custos, provenance in observe mode + containment (http)" {
		t.Fatalf("matrix %+v: want baseline, custos, observe + containment", m.Matrix)
	}
	for _, r := range m.Matrix[1:] {
		if r.Rule == "" || r.Containment == nil || *r.Containment < 0 {
			t.Errorf("%s: first alert rule %q, containment %v", r.World, r.Rule, r.Containment)
		}
	}
	if obs := m.Matrix[2]; !obs.On || obs.Records > 1000 {
		t.Errorf("observe + containment: %+v", obs)
	}
	if !m.Goals[1].Met {
		t.Errorf("goal %q not met", m.Goals[1].Goal)
	}
	out, code = runCLI(t, "simulate", "coupang", "--scale", "0.00002", "--quiet", "--mode", "http", "--worlds", "dpop")
	if code != 2 {
		t.Errorf("--mode http --worlds dpop: exit %d, want 2 (usage): %s", code, out)
	}
}
