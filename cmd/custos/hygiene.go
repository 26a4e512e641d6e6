package main

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/server"
	"github.com/custos-dev/custos/staff"
)

// newHygieneCmd is custos keys hygiene: the deploy gate on key custody.
func newHygieneCmd() *cobra.Command {
	var hf adminFlags
	var maxAge string
	var maxKeys int
	hygiene := &cobra.Command{
		Use:   "hygiene",
		Short: "Check signing keys' custody; exit 1 on any finding (a deploy gate)",
		Long: `hygiene checks the live (active and verify-only) signing keys: keys older than
--max-age, keys with no living custodian, keys someone who has since left had
access to, and custodians of more than --max-keys live keys. 0 turns a check off.

Exit status 1 when anything is found, 0 when clean.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if cmd.Flags().Changed("max-age") {
				q.Set("max_age", maxAge)
			}
			if cmd.Flags().Changed("max-keys") {
				if maxKeys < 0 {
					return usageErr("--max-keys must not be negative")
				}
				q.Set("max_keys", strconv.Itoa(maxKeys))
			}
			c, err := hf.client()
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			path := "/v1/keys/hygiene"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var out server.HygieneAnswer
			if err := c.Do(ctx, "GET", path, nil, &out); err != nil {
				return asUsage(err)
			}
			if out.Findings == nil {
				out.Findings = []staff.Finding{}
			}
			w := cmd.OutOrStdout()
			if hf.json {
				if err := printJSON(w, out); err != nil {
					return err
				}
			} else if len(out.Findings) == 0 {
				fmt.Fprintf(w, "%d live keys, no findings\n", out.Keys)
			} else {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "FINDING\tKID\tSTAFF\tDETAIL")
				for _, f := range out.Findings {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Kind, dash(f.KID), dash(f.Staff), f.Detail)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				for _, f := range out.Findings {
					if f.Kind == staff.FindingNoLivingCustodian {
						fmt.Fprintf(w, "name a custodian: custos keys custodians %s --add STAFF_ID --role administer (staff ids: GET /v1/staff)\n", f.KID)
						break
					}
				}
			}
			if n := len(out.Findings); n > 0 {
				return &exitError{1, fmt.Errorf("%d key hygiene finding(s) over %d live keys", n, out.Keys)}
			}
			return nil
		},
	}
	hf.add(hygiene)
	hygiene.Flags().StringVar(&maxAge, "max-age", staff.DefaultHygienePolicy.MaxKeyAge.String(), "oldest a live key may be (Go duration, e.g. 2160h)")
	hygiene.Flags().IntVar(&maxKeys, "max-keys", staff.DefaultHygienePolicy.MaxKeysPerCustodian, "most live keys one custodian may hold")
	return hygiene
}

// newCustodiansCmd is custos keys custodians: who holds or held a key.
func newCustodiansCmd() *cobra.Command {
	var cf adminFlags
	var add, role string
	custodians := &cobra.Command{
		Use:   "custodians KID [--add STAFF_ID --role operate|administer|accessed]",
		Short: "List who is or was custodian of a key, or record a new custodian",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if add == "" && cmd.Flags().Changed("role") {
				return usageErr("--role needs --add STAFF_ID")
			}
			switch staff.Role(role) {
			case staff.Operate, staff.Administer, staff.Accessed:
			default:
				return usageErr("--role must be operate, administer or accessed, not %q", role)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, cancel := ctxTimeout()
			defer cancel()
			path := "/v1/keys/" + url.PathEscape(args[0]) + "/custodians"
			var out server.CustodiansAnswer
			if add != "" {
				err = c.Do(ctx, "POST", path, server.AddCustodianBody{StaffID: add, Role: staff.Role(role)}, &out)
			} else {
				err = c.Do(ctx, "GET", path, nil, &out)
			}
			if err != nil {
				return asUsage(err)
			}
			if out.Custodians == nil {
				out.Custodians = []staff.Custodian{}
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STAFF_ID\tUSER\tSTATUS\tROLE\tVIA\tSINCE\tUNTIL")
			for _, c := range out.Custodians {
				until := "-"
				if c.Until != nil {
					until = ts(*c.Until)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.StaffID, dash(c.UserName), dash(string(c.Status)), c.Role, c.Via, ts(c.Since), until)
			}
			return tw.Flush()
		},
	}
	cf.add(custodians)
	custodians.Flags().StringVar(&add, "add", "", "staff id to record as custodian (see GET /v1/staff)")
	custodians.Flags().StringVar(&role, "role", string(staff.Operate), "operate, administer or accessed")
	return custodians
}

// ts is a time for a table: RFC 3339 UTC, or "-" when unset.
func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
