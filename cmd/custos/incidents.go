package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/server"
)

// incidentView is GET /v1/incidents/{id} with the deadline clocks added.
type incidentView struct {
	Incident  detect.Incident      `json:"incident"`
	Alerts    []detect.Alert       `json:"alerts"`
	Deadlines []forensics.Deadline `json:"deadlines"`
}

// fetchIncident asks the running server for an incident and its alerts; an
// unknown id is bad input (exit 2).
func fetchIncident(ctx context.Context, c *api.Client, id string) (incidentView, error) {
	var v incidentView
	if err := c.Do(ctx, "GET", "/v1/incidents/"+url.PathEscape(id), nil, &v); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return v, usageErr("no incident %q", id)
		}
		return v, err
	}
	if v.Alerts == nil {
		v.Alerts = []detect.Alert{}
	}
	return v, nil
}

// newIncidentsCmd is custos incidents: list, show and scope incidents.
func newIncidentsCmd() *cobra.Command {
	incidents := &cobra.Command{Use: "incidents", Short: "Incidents detection has opened: list, show, scope"}

	var lf adminFlags
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List incidents, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 10000 {
				return usageErr("--limit must be 1..10000")
			}
			c, err := lf.client()
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			var out struct {
				Incidents []detect.Incident `json:"incidents"`
			}
			if err := c.Do(ctx, "GET", fmt.Sprintf("/v1/incidents?limit=%d", limit), nil, &out); err != nil {
				return err
			}
			if out.Incidents == nil {
				out.Incidents = []detect.Incident{}
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			return detect.WriteIncidents(cmd.OutOrStdout(), out.Incidents)
		},
	}
	lf.add(list)
	list.Flags().IntVar(&limit, "limit", 100, "at most this many incidents")

	var sf adminFlags
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show an incident, its alerts and the legal deadline clocks running from its awareness",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			v, err := fetchIncident(ctx, c, args[0])
			if err != nil {
				return err
			}
			v.Deadlines = forensics.Deadlines(v.Incident.Awareness, time.Now())
			if sf.json {
				return printJSON(cmd.OutOrStdout(), v)
			}
			w := cmd.OutOrStdout()
			if err := detect.WriteIncident(w, v.Incident, v.Alerts); err != nil {
				return err
			}
			fmt.Fprintln(w)
			return forensics.WriteDeadlines(w, v.Deadlines)
		},
	}
	sf.add(show)

	var pf adminFlags
	var indicators []string
	var allowPartial bool
	scope := &cobra.Command{
		Use:   "scope ID [--indicator kind:value …]",
		Short: "Have the running server scope an incident over its own events (indicators default to the incident's alerts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body any
			if len(indicators) > 0 {
				ind, err := forensics.ParseIndicators(indicators)
				if err != nil {
					return usageErr("%v", err)
				}
				body = ind
			}
			c, err := pf.client()
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			path := "/v1/incidents/" + url.PathEscape(args[0]) + "/scope"
			if allowPartial {
				path += "?allow_partial=true"
			}
			var out server.ScopeAnswer
			if err := c.Do(ctx, "POST", path, body, &out); err != nil {
				return asUsage(err)
			}
			if pf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if err := out.Scope.WriteSummary(cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return forensics.WriteDeadlines(cmd.OutOrStdout(), out.Deadlines)
		},
	}
	pf.add(scope)
	scope.Flags().StringArrayVar(&indicators, "indicator", nil, "kind:value (kid, jti, ip, asn, country, route, subject, from, to, reason, request); repeatable")
	scope.Flags().BoolVar(&allowPartial, "allow-partial", false, "leave unreadable event files out (the answer says so) instead of failing")

	incidents.AddCommand(list, show, scope)
	return incidents
}

// asUsage makes a refusal of bad input by the server (400, 404, 409) an
// exit-2 error.
func asUsage(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusNotFound || ae.Status == http.StatusConflict) {
		return &exitError{2, err}
	}
	return err
}
