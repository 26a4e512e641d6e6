package main

import (
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/server"
)

// newCredentialsCmd is custos credentials: the control plane's own bearer
// credentials.
func newCredentialsCmd() *cobra.Command {
	creds := &cobra.Command{
		Use:   "credentials",
		Short: "The control plane's own credentials: admin, gateway, detector, scim, issuer",
		Long: `Credentials are bearer tokens for custos's own API, each with one role:

  admin     every admin endpoint (a credential bound to a person with --person
            is revoked when that person departs)
  gateway   follow the ledger and keys, post access events (custos gateway)
  detector  what a gateway may, plus reading alerts and incidents
  scim      /scim/v2 only, on the identities its identity provider provisioned
  issuer    record the tokens of one configured identity provider (--provider
            NAME) in the ledger: /v1/ledger/record, /v1/ledger/prv and
            /v1/providers/NAME/...; nothing else

Tokens are shown once; only their SHA-256 is kept.`,
	}

	var af adminFlags
	var role, person, provider string
	add := &cobra.Command{
		Use:   "add NAME --role admin|gateway|detector|scim|issuer [--person STAFF_ID] [--provider NAME]",
		Short: "Make a credential; prints its token once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := authority.ParseRole(role); err != nil {
				return usageErr("--role must be admin, gateway, detector, scim or issuer, not %q", role)
			}
			var out server.CredentialAnswer
			if err := af.call("POST", "/v1/credentials", map[string]string{"name": args[0], "role": role, "person": person, "provider": provider}, &out); err != nil {
				return asUsage(err)
			}
			if af.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"id": out.ID, "token": out.Token, "name": out.Name, "role": out.Role, "person": out.Person})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "id:    %s\ntoken: %s\n(the token is shown once; only its hash is kept)\n", out.ID, out.Token)
			return nil
		},
	}
	af.add(add)
	add.Flags().StringVar(&role, "role", "", "admin, gateway, detector, scim or issuer (required)")
	add.Flags().StringVar(&person, "person", "", "staff id or userName the credential belongs to; revoked when they depart")
	add.Flags().StringVar(&provider, "provider", "", "scim: the identity provider it speaks for (default NAME); issuer: the configured provider whose tokens it records (required)")

	var lf adminFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List credentials, revoked ones included",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Credentials []authority.Credential `json:"credentials"`
			}
			for cursor := ""; ; {
				var pg struct {
					Credentials []authority.Credential `json:"credentials"`
					Next        string                 `json:"next"`
				}
				if err := lf.call("GET", "/v1/credentials?limit=1000&cursor="+url.QueryEscape(cursor), nil, &pg); err != nil {
					return asUsage(err)
				}
				out.Credentials = append(out.Credentials, pg.Credentials...)
				if cursor = pg.Next; cursor == "" {
					break
				}
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tPERSON\tCREATED\tREVOKED")
			for _, c := range out.Credentials {
				rev := "-"
				if c.RevokedAt != nil {
					rev = c.RevokedAt.Format(time.RFC3339)
				}
				who := c.Person
				if c.Role == authority.RoleSCIM || c.Role == authority.RoleIssuer {
					who = "provider:" + c.Provider
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Name, c.Role, dash(who), c.CreatedAt.Format(time.RFC3339), rev)
			}
			return tw.Flush()
		},
	}
	lf.add(list)

	var rf adminFlags
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke ID [--reason R]",
		Short: "Revoke a credential now (the last admin credential is refused)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := strings.TrimSpace(args[0])
			if id == "" {
				return usageErr("an ID is required")
			}
			var out authority.Credential
			if err := rf.call("POST", "/v1/credentials/"+url.PathEscape(id)+"/revoke", map[string]string{"reason": reason}, &out); err != nil {
				return asUsage(err)
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "credential %s (%s, %s) revoked\n", out.ID, out.Name, out.Role)
			return nil
		},
	}
	rf.add(revoke)
	revoke.Flags().StringVar(&reason, "reason", "", "why")

	creds.AddCommand(add, list, revoke)
	return creds
}
