package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/api"
	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/keys"
	"github.com/custos-dev/custos/server"
)

// adminFlags are the flags of every command that talks to a running server.
type adminFlags struct {
	server, tokenFile, data string
	json                    bool
}

func (f *adminFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "http://"+config.DefaultListen, "URL of the running custos")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "admin credential file (default DATA/admin-token)")
	cmd.Flags().StringVar(&f.data, "data", os.Getenv("CUSTOS_DATA"), "data directory, to find the admin credential")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
}

func (f *adminFlags) client() (*api.Client, error) {
	tf := f.tokenFile
	if tf == "" {
		if f.data == "" {
			return nil, usageErr("need --token-file or --data to find the admin credential")
		}
		tf = filepath.Join(f.data, server.AdminTokenFile)
	}
	return api.New(f.server, tf)
}

// call sends one API request with the admin credential, bounded in time.
func (f *adminFlags) call(method, path string, body, out any) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	return c.Do(ctx, method, path, body, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// newClientsCmd is custos clients: register the clients that may ask for tokens.
func newClientsCmd() *cobra.Command {
	clients := &cobra.Command{Use: "clients", Short: "Manage the clients that may ask for tokens"}
	var f adminFlags
	var audiences []string
	var heldBy, jwksFile, jwksURI string
	var requireDPoP bool
	add := &cobra.Command{
		Use:   "add NAME --audience AUD [--jwks FILE | --jwks-uri URL] [--require-dpop]",
		Short: "Register a client; prints its secret once, or registers its public keys for private_key_jwt",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(audiences) == 0 {
				return usageErr("--audience is required")
			}
			body := map[string]any{"name": args[0], "audience": audiences, "held_by": heldBy}
			auth, err := clientAuthFlags(jwksFile, jwksURI, requireDPoP)
			if err != nil {
				return err
			}
			if len(auth.JWKS) > 0 {
				body["jwks"] = auth.JWKS
			}
			if auth.JWKSURI != "" {
				body["jwks_uri"] = auth.JWKSURI
			}
			if auth.RequireDPoP {
				body["require_dpop"] = true
			}
			var out struct {
				ClientID     string `json:"client_id"`
				ClientSecret string `json:"client_secret"`
				JWKSURI      string `json:"jwks_uri,omitempty"`
				RequireDPoP  bool   `json:"require_dpop,omitempty"`
			}
			if err := f.call("POST", "/v1/clients", body, &out); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "client_id:     %s\n", out.ClientID)
			if auth.HasKeys() {
				fmt.Fprintf(w, "authentication: private_key_jwt (a client assertion signed by a registered key; no secret is accepted)\n")
			} else {
				fmt.Fprintf(w, "client_secret: %s\n(the secret is shown once; only its hash is kept)\n", out.ClientSecret)
			}
			if out.RequireDPoP {
				fmt.Fprintf(w, "require_dpop:  every token request must carry a DPoP proof; tokens are bound to its key\n")
			}
			return nil
		},
	}
	f.add(add)
	add.Flags().StringSliceVar(&audiences, "audience", nil, "audience the client may ask tokens for (repeatable)")
	add.Flags().StringVar(&heldBy, "held-by", "", "staff id of the custodian of this client secret (default: the caller)")
	add.Flags().StringVar(&jwksFile, "jwks", "", "JWK Set file of the client's public keys (EdDSA, ES256, RS256): it authenticates with private_key_jwt")
	add.Flags().StringVar(&jwksURI, "jwks-uri", "", "https URL (http only on loopback) where the client publishes its public keys, for private_key_jwt")
	add.Flags().BoolVar(&requireDPoP, "require-dpop", false, "refuse token requests without a DPoP proof, so every token is bound to the client's key")
	clients.AddCommand(add)
	return clients
}

// maxJWKSFile bounds the key set file custos clients add reads.
const maxJWKSFile = 64 << 10

// clientAuthFlags reads and checks --jwks, --jwks-uri and --require-dpop
// before anything is sent, with the authority's own rules, so that a
// mistake is named here rather than as a refusal of the server.
func clientAuthFlags(jwksFile, jwksURI string, requireDPoP bool) (authority.ClientAuth, error) {
	a := authority.ClientAuth{JWKSURI: jwksURI, RequireDPoP: requireDPoP}
	if jwksFile != "" && jwksURI != "" {
		return a, usageErr("give --jwks or --jwks-uri, not both")
	}
	if jwksFile != "" {
		fi, err := os.Stat(jwksFile)
		if err != nil {
			return a, usageErr("--jwks: %v", err)
		}
		if !fi.Mode().IsRegular() || fi.Size() > maxJWKSFile {
			return a, usageErr("--jwks %s: not a regular file of at most %d bytes", jwksFile, maxJWKSFile)
		}
		b, err := os.ReadFile(jwksFile)
		if err != nil {
			return a, usageErr("--jwks: %v", err)
		}
		if !json.Valid(b) {
			return a, usageErr("--jwks %s: not JSON (a JWK Set: {\"keys\": [...]})", jwksFile)
		}
		a.JWKS = b
	}
	if err := a.Check(); err != nil {
		flag := "--jwks-uri"
		if jwksFile != "" {
			flag = "--jwks " + jwksFile
		}
		msg := strings.TrimPrefix(err.Error(), "authority: ")
		msg = strings.TrimPrefix(strings.TrimPrefix(msg, "jwks: "), "jwks_uri: ")
		return a, usageErr("%s: %s", flag, msg)
	}
	return a, nil
}

// newKeysCmd is custos keys: list, rotate and revoke signing keys, check
// their hygiene and custodians.
func newKeysCmd() *cobra.Command {
	keysCmd := &cobra.Command{Use: "keys", Short: "Signing keys: list, rotate, revoke, custodians, hygiene"}
	var lf adminFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List signing keys and their states",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Keys []keys.Key `json:"keys"`
			}
			if err := lf.call("GET", "/v1/keys", nil, &out); err != nil {
				return err
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KID\tALG\tSTATE\tBACKEND\tCREATED")
			for _, k := range out.Keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, k.State, k.Backend, k.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	lf.add(list)
	var rf adminFlags
	var rotReason string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new active key now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var k keys.Key
			if err := rf.call("POST", "/v1/keys/rotate", map[string]string{"reason": rotReason}, &k); err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), k)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new active key %s (%s)\n", k.KID, k.Alg)
			return nil
		},
	}
	rf.add(rotate)
	rotate.Flags().StringVar(&rotReason, "reason", "manual rotation", "why")
	var vf adminFlags
	var revReason string
	revoke := &cobra.Command{
		Use:   "revoke KID --reason R",
		Short: "Revoke a key now; it leaves JWKS at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if revReason == "" {
				return usageErr("--reason is required")
			}
			var k keys.Key
			if err := vf.call("POST", "/v1/keys/"+args[0]+"/revoke", map[string]string{"reason": revReason}, &k); err != nil {
				return err
			}
			if vf.json {
				return printJSON(cmd.OutOrStdout(), k)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
			return nil
		},
	}
	vf.add(revoke)
	revoke.Flags().StringVar(&revReason, "reason", "", "why (required)")
	keysCmd.AddCommand(list, rotate, revoke, newHygieneCmd(), newCustodiansCmd())
	return keysCmd
}

// newSCIMCmd is custos scim: bearer tokens of identity providers.
func newSCIMCmd() *cobra.Command {
	scim := &cobra.Command{Use: "scim", Short: "SCIM 2.0 provisioning"}
	tokens := &cobra.Command{Use: "tokens", Short: "Bearer tokens of identity providers"}
	var sf adminFlags
	stAdd := &cobra.Command{
		Use:   "add NAME",
		Short: "Make a bearer token for an identity provider; prints it once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Token string `json:"token"`
			}
			if err := sf.call("POST", "/v1/scim/tokens", map[string]string{"name": args[0]}, &out); err != nil {
				return err
			}
			if sf.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	sf.add(stAdd)
	tokens.AddCommand(stAdd)
	scim.AddCommand(tokens)
	return scim
}
