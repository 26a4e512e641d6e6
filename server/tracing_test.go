package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/custos-dev/custos/config"
)

// An issuance request continues the login service's trace: the server span
// is named by its route and has the ledger commit as a child; the in-process
// gateway's span of a request with the issued token joins the same kind of
// trace; a refused issuance is a span too. Off by default, and a bad
// endpoint in the configuration is refused by name.
func TestIssuanceTraces(t *testing.T) {
	e := start(t)
	secret := e.Client(t)
	m := e.Member(4)
	e.Issue(t, secret, m) // before tracing: no span anywhere
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	if n := len(sr.Ended()); n != 0 {
		t.Fatalf("%d spans before tracing", n)
	}
	e.S.SetTracerProvider(tp)

	const trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	issue := func(auth string) int {
		req, _ := http.NewRequest("POST", e.APIURL+"/v1/tokens", strings.NewReader(`{"subject":"`+m+`","audience":"`+config.DefaultAudience+`"}`))
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("traceparent", "00-"+trace+"-"+parent+"-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := issue(secret); st != 200 {
		t.Fatalf("issue: %d", st)
	}
	if st := issue("wrong"); st != 401 {
		t.Fatalf("issue with a wrong secret: %d", st)
	}
	var reqs, puts []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch s.Name() {
		case "POST /v1/tokens":
			reqs = append(reqs, s)
		case "ledger.put":
			puts = append(puts, s)
		}
	}
	if len(reqs) != 2 || len(puts) != 1 {
		t.Fatalf("%d request spans and %d ledger spans, want 2 and 1", len(reqs), len(puts))
	}
	for _, s := range reqs {
		if s.SpanContext().TraceID().String() != trace || s.Parent().SpanID().String() != parent {
			t.Errorf("request span not in the caller's trace: %s / %s", s.SpanContext().TraceID(), s.Parent().SpanID())
		}
	}
	codes := map[string]bool{}
	for _, s := range reqs {
		for _, kv := range s.Attributes() {
			if kv.Key == "http.response.status_code" {
				codes[kv.Value.Emit()] = true
			}
		}
	}
	if !codes["200"] || !codes["401"] {
		t.Errorf("status codes on the spans: %v", codes)
	}
	if puts[0].Parent().SpanID() != reqs[0].SpanContext().SpanID() && puts[0].Parent().SpanID() != reqs[1].SpanContext().SpanID() {
		t.Error("ledger.put is not a child of the issuance request")
	}

	// The in-process gateway traces with the same provider.
	tok := e.Issue(t, secret, m)
	if st, _ := e.Get(t, tok, "/api/members/"+m+"/profile"); st != 200 {
		t.Fatalf("gateway: %d", st)
	}
	found := false
	for _, s := range sr.Ended() {
		found = found || s.Name() == "gateway.request"
	}
	if !found {
		t.Error("no gateway span")
	}

	for _, bad := range []string{"127.0.0.1:4318", "ftp://x"} {
		c := config.Default()
		c.Data = t.TempDir()
		c.Telemetry.OTLPEndpoint = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "telemetry.otlp_endpoint") {
			t.Errorf("endpoint %q: %v", bad, err)
		}
	}
	c := config.Default()
	c.Data = t.TempDir()
	c.Telemetry.SampleRatio = 1.5
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "telemetry.sample_ratio") {
		t.Errorf("sample ratio 1.5: %v", err)
	}
}

// With telemetry.otlp_endpoint set, spans reach an OTLP/HTTP receiver.
func TestOTLPExport(t *testing.T) {
	got := make(chan string, 16)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == "POST" && r.URL.Path == "/v1/traces" && len(b) > 0 {
			got <- r.Header.Get("Content-Type") + " " + string(b)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer rcv.Close()
	e := startWith(t, func(c *config.Config) { c.Telemetry.OTLPEndpoint = rcv.URL })
	e.Issue(t, e.Client(t), e.Member(1))
	select {
	case body := <-got:
		if !strings.HasPrefix(body, "application/x-protobuf") || !strings.Contains(body, "POST /v1/tokens") || !strings.Contains(body, "ledger.put") {
			t.Fatalf("OTLP export lacks the issuance spans: %.200q", body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no spans exported to the OTLP endpoint")
	}
}
