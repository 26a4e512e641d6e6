package server

import (
	"context"
	"fmt"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/config"
)

// Traces are OpenTelemetry spans of the authority's requests (issuance and
// its ledger commit among them) and of the gateway's checks, exported over
// OTLP/HTTP when telemetry.otlp_endpoint is set; with it unset nothing is
// traced and nothing is spent on it. W3C trace context is read from callers
// and passed on to the upstream.

// TracerName is the instrumentation scope of custos's spans.
const TracerName = "github.com/custos-dev/custos"

// NewTracerProvider exports spans to cfg.Telemetry.OTLPEndpoint; nil when no
// endpoint is configured. Shut it down to flush the last spans.
func NewTracerProvider(ctx context.Context, cfg config.Config, service string) (*sdktrace.TracerProvider, error) {
	if cfg.Telemetry.OTLPEndpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Telemetry.OTLPEndpoint))
	if err != nil {
		return nil, fmt.Errorf("telemetry.otlp_endpoint: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName(service), semconv.ServiceVersion(readVersion()))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Telemetry.SampleRatio))),
	), nil
}

type tracerRef struct{ trace.Tracer }

// propagator reads and writes W3C traceparent and tracestate.
var propagator = propagation.TraceContext{}

// SetTracerProvider traces the API's requests and the in-process gateway's
// checks with tp (nil stops tracing).
func (s *Server) SetTracerProvider(tp trace.TracerProvider) {
	if tp == nil {
		s.tracer.Store(nil)
	} else {
		s.tracer.Store(&tracerRef{tp.Tracer(TracerName)})
	}
	if s.Gateway != nil {
		s.Gateway.SetTracerProvider(tp)
	}
}

// traceRequest starts the server span of an API request, named by its route
// pattern, as a child of the caller's trace context.
func (s *Server) traceRequest(r *http.Request, pattern string) (*http.Request, trace.Span) {
	tr := s.tracer.Load()
	if tr == nil {
		return r, nil
	}
	ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tr.Start(ctx, pattern, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(pattern)))
	return r.WithContext(ctx), span
}

func endRequestSpan(span trace.Span, code int) {
	if span == nil {
		return
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(code))
	if code >= 500 {
		span.SetStatus(codes.Error, http.StatusText(code))
	}
	span.End()
}

// traceChild starts a span under ctx's span when one is being recorded.
func traceChild(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, nil
	}
	return parent.TracerProvider().Tracer(TracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}
