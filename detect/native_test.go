package detect

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/cel-go/common/types"

	"github.com/custos-dev/custos/event"
)

// nativeExprs are expressions the native form must take (ok/) or leave to
// CEL (cel/); both kinds must agree with CEL on every event.
var nativeExprs = []string{
	`ok/route == "/v1/members/{id}/addresses" && country != "KR"`,
	`ok/"entrance_code" in data_classes && verdict == "allow"`,
	`ok/status == 404 && subject != ""`,
	`ok/asn == 16509 && route.startsWith("/v1/members/")`,
	`ok/user_agent.contains("python") || user_agent.endsWith("curl")`,
	`ok/token.sub != "" && subject != "" && token.sub != subject`,
	`ok/country == "CN" || country == "RU"`,
	`ok/status >= 500 || status < 200 || bytes > 1000 || latency_us <= 10`,
	`ok/country in ["CN", "RU", "KP"]`,
	`ok/status in [401, 403, 404]`,
	`ok/!(verdict == "allow") && reason != ""`,
	`ok/size(user_agent) > 5 && size(data_classes) >= 2`,
	`ok/user_agent.matches("^py.*requests")`,
	`ok/country < "M" && method >= "GET"`,
	`ok/(status == 404 ? country == "CN" : asn == 4766) == true`,
	`ok/token.iat < token.exp && token.kid == "k1"`,
	`ok/subject in data_classes`,
	`ok/"KR" == country || "allow" != verdict`,
	`ok/5000 < latency_us || 404 >= status || 4766 == asn || 100 <= bytes || 0 > token.iat || 1 != token.exp`,
	`ok/route.endsWith("addresses") && token.kid.startsWith("k") && !src_ip.contains("203.")`,
	`ok/"address" in data_classes && reason != "not_issued" && token.jti != "" && token.aud == ""`,
	`ok/gateway == "" && request_id != "" && method == "GET" && path != "" && user_agent != ""`,
	`ok/size(user_agent) > 3 && (status < 404 && 1500 >= bytes)`,
	`ok/country == "KR" || (asn != 4766 && bytes > 100)`,
	`ok/!(status == 404) && 10 < latency_us`,
	`ok/status <= 9223372036854775807 && asn > -9223372036854775808`,
	`cel/time > timestamp("2025-06-24T03:00:00.5Z")`,
	`cel/string(status) == "404"`,
	`cel/user_agent.matches(country)`,
	`cel/double(status) == 404.0`,
	`cel/[1, 2].exists(x, x == status)`,
	`cel/int(asn) / (status - 404) > 0`,
}

func TestNativeMatchesCEL(t *testing.T) {
	env, err := ruleEnv()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	evs := make([]event.Access, 3000)
	for i := range evs {
		a := ev(i)
		a.Route = pick("/v1/members/{id}/addresses", "/v1/orders", "", "/v2/x")
		a.Country = pick("KR", "CN", "RU", "", "US", "Mx")
		a.Status = []int{200, 404, 500, 401, 199, 503}[rng.IntN(6)]
		a.ASN = []uint32{4766, 16509, 0}[rng.IntN(3)]
		a.UserAgent = pick("python-requests/2", "curl", "shop-app/5.1", "", "한국어 앱", "py-x-requests")
		a.Verdict = event.Verdict(pick("allow", "deny"))
		a.Reason = event.Reason(pick("", "not_issued", "revoked_token"))
		a.Subject = pick("", "1001", "1002", "address")
		a.Token.Sub = pick("", "1001", "1003")
		a.Token.KID = pick("k1", "k2", "")
		a.Token.EXP = a.Token.IAT + int64(rng.IntN(3)) - 1
		a.Bytes, a.LatencyUS = int64(rng.IntN(2000)), int64(rng.IntN(20))
		a.Method = pick("GET", "DELETE", "POST")
		a.DataClasses = [][]string{nil, {"name"}, {"address", "entrance_code"}, {"name", "order_history", "address"}}[rng.IntN(4)]
		evs[i] = a
	}
	for _, tc := range nativeExprs {
		kind, expr, _ := strings.Cut(tc, "/")
		t.Run(tc, func(t *testing.T) {
			ast, iss := env.Compile(expr)
			if iss != nil && iss.Err() != nil {
				t.Fatal(iss.Err())
			}
			prg, err := env.Program(ast)
			if err != nil {
				t.Fatal(err)
			}
			fn := nativeOf(ast)
			if (fn != nil) != (kind == "ok") {
				t.Fatalf("native form: %v, want %v", fn != nil, kind == "ok")
			}
			if fn == nil {
				return
			}
			g := guardOf(ast.NativeRep().Expr())
			var act activation
			trues, guarded := 0, 0
			for i := range evs {
				act.reset(&evs[i])
				out, _, err := prg.Eval(&act)
				want := err == nil && out == types.True
				if got := fn(&evs[i]); got != want {
					t.Fatalf("event %d: native %v, CEL %v (err %v) for %+v", i, got, want, err, evs[i])
				}
				if g.fails(&evs[i]) {
					guarded++
					if want {
						t.Fatalf("event %d: fails the guard %+v but matches", i, g)
					}
				}
				if want {
					trues++
				}
			}
			if trues == 0 || trues == len(evs) {
				t.Logf("note: %s is %v on every event", expr, trues > 0)
			}
			if g.kind != 0 && guarded == 0 {
				t.Logf("note: no event fails the guard of %s", expr)
			}
		})
	}
}

// TestBenchRulesNative: the benchmark's 20 rules all run natively, so the
// figures in docs/bench/detect.md are those of the native path.
func TestBenchRulesNative(t *testing.T) {
	rs, err := parseRules("bench", []byte(benchRules()), 8)
	if err != nil {
		t.Fatal(err)
	}
	guarded := 0
	for _, r := range rs.rules {
		if r.native == nil {
			t.Errorf("rule %s (%s) runs in CEL", r.Name, r.Expr)
		}
		if r.guard.kind != 0 {
			guarded++
		}
	}
	if guarded < 14 {
		t.Errorf("%d of the benchmark's rules have a guard, want at least 14", guarded)
	}
}

// TestFieldOffsets: every field with a getter has an offset that reads the same value.
func TestFieldOffsets(t *testing.T) {
	if len(strFields) != len(strOffsets) || len(intFields) != len(intOffsets) {
		t.Fatalf("getters %d+%d, offsets %d+%d", len(strFields), len(intFields), len(strOffsets), len(intOffsets))
	}
	a := ev(1)
	a.Gateway, a.Path, a.Token.Aud, a.Reason = "gw", "/p", "aud", event.ReasonNotIssued
	a.Bytes, a.LatencyUS, a.Token.EXP = 7, 9, 11
	for name, f := range strFields {
		if got := strAt(&a, strOffsets[name]); got != f(&a) {
			t.Errorf("%s: %q at offset, %q from getter", name, got, f(&a))
		}
	}
	for name, f := range intFields {
		if got := intAt(&a, intOffsets[name]); got != f(&a) {
			t.Errorf("%s: %d at offset, %d from getter", name, got, f(&a))
		}
	}
}
