package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// With a tracer provider, each request is one span that continues the
// client's W3C trace context, carries the verdict and reason, and is the
// parent the upstream sees; a client's own traceparent never reaches the
// upstream as it was sent. Without one, headers pass through untouched.
func TestTraces(t *testing.T) {
	e := newEnv(t, testConfig())
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	var seen http.Header
	h := e.g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		io.WriteString(w, "{}")
	}))
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	send := func(tok string) {
		r := httptest.NewRequest("GET", addr, nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("traceparent", parent)
		seen = nil
		h.ServeHTTP(httptest.NewRecorder(), r)
	}

	good := e.issue(t, claimsFor("m-1"))
	send(good)
	if seen.Get("Traceparent") != parent {
		t.Fatalf("untraced gateway changed traceparent: %q", seen.Get("Traceparent"))
	}
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans without a tracer provider", n)
	}

	e.g.SetTracerProvider(tp)
	send(good)
	fc := claimsFor("m-1")
	fc.JTI = "forged-jti"
	forged := e.mint(t, fc) // signed with the real key, never issued
	send(forged)
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
		m := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			m[kv.Key] = kv.Value.Emit()
		}
		return m
	}
	allow, deny := spans[0], spans[1]
	for _, c := range []struct {
		s               sdktrace.ReadOnlySpan
		verdict, reason string
	}{{allow, "allow", ""}, {deny, "deny", "not_issued"}} {
		a := attrs(c.s)
		if c.s.Name() != "gateway.request" || c.s.SpanKind() != trace.SpanKindServer ||
			a["custos.verdict"] != c.verdict || a["custos.reason"] != c.reason {
			t.Errorf("span %s %v: %v", c.s.Name(), c.s.SpanKind(), a)
		}
		if c.s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || c.s.Parent().SpanID().String() != "00f067aa0ba902b7" {
			t.Errorf("span does not continue the caller's trace: trace %s parent %s", c.s.SpanContext().TraceID(), c.s.Parent().SpanID())
		}
	}
	if a := attrs(allow); a["http.route"] == "" {
		t.Errorf("allowed request's span has no route: %v", a)
	}
	// The refused request never reached the upstream; the allowed one carried
	// the gateway's span as its parent.
	send(good)
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + sr.Ended()[2].SpanContext().SpanID().String() + "-01"
	if got := seen.Get("Traceparent"); got != want {
		t.Fatalf("upstream traceparent %q, want %q", got, want)
	}
}
