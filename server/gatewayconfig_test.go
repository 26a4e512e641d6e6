package server_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/custos-dev/custos/config"
	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/gateway"
	"github.com/custos-dev/custos/server"
)

// GatewayConfig is the one translation of the file's gateway section into
// the gateway's configuration: every field lands where it should.
func TestGatewayConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Issuer = "https://custos.test"
	cfg.Decoys = []string{"9999"}
	cfg.Gateway = config.Gateway{
		Name: "edge-1", Audience: []string{"shop-api", "billing"}, Leeway: 7 * time.Second,
		Routes:    []config.Route{{Pattern: "GET /api/members/{id}", DataClasses: []string{event.ClassName}, SubjectParam: "id"}},
		Unmatched: "forward", Observe: []string{string(event.ReasonNotIssued)}, GeoIP: []string{"/geo/country.mmdb"},
		TrustedProxies: []string{"10.0.0.0/8"}, EventsFile: "/var/log/events.jsonl",
	}
	want := gateway.Config{
		GatewayName: "edge-1", Issuer: "https://custos.test", Audience: gateway.Audiences{"shop-api", "billing"}, Leeway: 7 * time.Second,
		Routes:    []gateway.Route{{Pattern: "GET /api/members/{id}", DataClasses: []string{event.ClassName}, SubjectParam: "id"}},
		Unmatched: gateway.Forward, Modes: map[event.Reason]gateway.Mode{event.ReasonNotIssued: gateway.Observe},
		Decoys: []string{"9999"}, TrustedProxies: []string{"10.0.0.0/8"}, GeoIP: []string{"/geo/country.mmdb"}, EventsFile: "/var/log/events.jsonl",
	}
	got := server.GatewayConfig(cfg)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GatewayConfig\n got %+v\nwant %+v", got, want)
	}
	got.Routes[0].Pattern = "GET /changed"
	if cfg.Gateway.Routes[0].Pattern != "GET /api/members/{id}" {
		t.Fatal("the gateway's routes share the configuration's backing array")
	}
}

// Every field of config.Gateway either reaches gateway.Config or is one the
// process around the gateway uses: a new field cannot be forgotten.
func TestGatewayConfigCoversEveryField(t *testing.T) {
	process := map[string]bool{ // read by RunGateway and custos serve, not by the gateway's checks
		"Upstream": true, "Listen": true, "AdminListen": true, "Decide": true, "GRPCListen": true,
		"Authority": true, "AuthorityTokenFile": true, "AuthorityToken": true,
		"MaxStale": true, // the remote ledger's bounded staleness (RunGateway)
	}
	base := server.GatewayConfig(config.Default())
	typ := reflect.TypeOf(config.Gateway{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		cfg := config.Default()
		setNonZero(t, f.Name, reflect.ValueOf(&cfg.Gateway).Elem().Field(i))
		changed := !reflect.DeepEqual(server.GatewayConfig(cfg), base)
		if changed == process[f.Name] {
			t.Errorf("config.Gateway.%s: reaches gateway.Config %v, want %v", f.Name, changed, !process[f.Name])
		}
	}
}

// setNonZero gives v a value other than its zero: every field of a struct.
func setNonZero(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64: // time.Duration among them
		v.SetInt(int64(3 * time.Second))
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.String {
			v.Set(reflect.ValueOf([]string{"x"}))
		} else {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			setNonZero(t, name+"."+v.Type().Field(i).Name, v.Field(i))
		}
	default:
		t.Fatalf("config.Gateway.%s: kind %s not covered by this test", name, v.Kind())
	}
}
