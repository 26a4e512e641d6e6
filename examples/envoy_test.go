package examples

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// parseEnvoy reads an Envoy YAML bootstrap into go-control-plane's message,
// strictly (an unknown field or type is an error), and validates it with
// the protos' own rules.
func parseEnvoy(t *testing.T, src []byte) (*bootstrapv3.Bootstrap, error) {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		return nil, err
	}
	return &b, b.ValidateAll()
}

// examples/envoy/envoy.yaml and envoy-http.yaml are bootstraps Envoy
// accepts: each parses into the Bootstrap message with every typed_config
// resolved, passes the protos' validation, and its ext_authz filter asks
// custos (over gRPC on --grpc-listen, or HTTP on /ext_authz of --listen),
// fails closed, and sits before the router.
func TestEnvoyConfig(t *testing.T) {
	for _, file := range []string{"envoy/envoy.yaml", "envoy/envoy-http.yaml"} {
		t.Run(file, func(t *testing.T) { testEnvoyConfig(t, file) })
	}
}

func testEnvoyConfig(t *testing.T, file string) {
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseEnvoy(t, src)
	if err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	clusters := map[string]uint32{}
	for _, c := range b.GetStaticResources().GetClusters() {
		ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint()
		clusters[c.GetName()] = ep.GetAddress().GetSocketAddress().GetPortValue()
	}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		t.Fatalf("%d listeners", len(ls))
	}
	var hcm hcmv3.HttpConnectionManager
	if err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	filters := hcm.GetHttpFilters()
	if len(filters) != 2 || filters[0].GetName() != "envoy.filters.http.ext_authz" || filters[1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http filters %v", filters)
	}
	var az extauthzv3.ExtAuthz
	if err := filters[0].GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	if err := az.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if az.GetFailureModeAllow() {
		t.Error("ext_authz fails open")
	}
	if hs := az.GetHttpService(); hs != nil {
		c := hs.GetServerUri().GetCluster()
		if port, ok := clusters[c]; !ok || port != 7780 || hs.GetPathPrefix() != "/ext_authz" {
			t.Errorf("HTTP ext_authz to cluster %q (port %d) under %q, not custos's /ext_authz on --listen", c, port, hs.GetPathPrefix())
		}
		allowed := map[string]bool{}
		for _, m := range hs.GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns() {
			allowed[m.GetExact()] = true
		}
		for _, h := range []string{"x-custos-subject", "x-custos-jti", "x-custos-kid"} {
			if !allowed[h] {
				t.Errorf("%s does not reach the upstream", h)
			}
		}
	} else {
		gc := az.GetGrpcService().GetEnvoyGrpc().GetClusterName()
		if port, ok := clusters[gc]; !ok || port != 7781 {
			t.Errorf("ext_authz cluster %q (port %d) is not custos's --grpc-listen", gc, port)
		}
	}
	for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		if c := r.GetRoute().GetCluster(); clusters[c] != 8080 {
			t.Errorf("route to %q, not the shop", c)
		}
	}

	// The parse is strict: a misspelt field or an unknown type fails.
	for _, bad := range []string{
		strings.Replace(string(src), "failure_mode_allow", "failure_mode_alow", 1),
		strings.Replace(string(src), "v3.ExtAuthz", "v3.ExtAuth", 1),
		strings.Replace(string(src), "port_value: 8080", "port_value: -1", 1),
		strings.Replace(string(src), "timeout: 0.5s", "timeout: soon", 1),
	} {
		if _, err := parseEnvoy(t, []byte(bad)); err == nil {
			t.Errorf("a broken config parsed:\n%s", bad[:0])
		}
	}
}
