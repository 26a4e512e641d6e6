// Package extauthz serves Envoy's external authorization over gRPC
// (envoy.service.auth.v3.Authorization/Check) in front of the gateway's
// decision function, with the message types Envoy itself uses
// (github.com/envoyproxy/go-control-plane).
//
// A CheckRequest's HTTP attributes become a [gateway.Query]; the verdict
// becomes an OK response that sets the identity headers upstream (and removes
// any client-sent X-Custos-* header), or a denied response with the RFC 6750
// challenge, X-Custos-Reason and the JSON refusal body: 401 (gRPC
// UNAUTHENTICATED), or 403 (PERMISSION_DENIED) for blocked_source. The
// client address Envoy reports (source.address) is believed only when the
// gRPC peer is one of the gateway's trusted proxies.
package extauthz

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/custos-dev/custos/gateway"
)

// Decider is the gateway's decision API ([gateway.Gateway.Answer]).
type Decider interface {
	Answer(ctx context.Context, q gateway.Query) gateway.Verdict
}

// MaxHeaders bounds the headers of one CheckRequest that are read.
const MaxHeaders = 256

// Server answers Check with a Decider.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	d Decider
}

// New returns a Server deciding with d.
func New(d Decider) *Server { return &Server{d: d} }

// Register adds the Authorization service to gs.
func (s *Server) Register(gs *grpc.Server) { authv3.RegisterAuthorizationServer(gs, s) }

// Check decides one request Envoy holds.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return Response(s.d.Answer(ctx, Query(ctx, req))), nil
}

// Query reads the original request from a CheckRequest: method, host,
// path (with its query) and headers from attributes.request.http (the
// headers map, or header_map when Envoy sends raw headers), the gRPC peer,
// and the source address Envoy saw.
func Query(ctx context.Context, req *authv3.CheckRequest) gateway.Query {
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	q := gateway.Query{Request: gateway.Request{Method: h.GetMethod(), Host: h.GetHost(), Target: h.GetPath(), Header: http.Header{},
		Scheme: h.GetScheme()}, ListRemoved: true}
	n := 0
	add := func(k, v string) {
		if n >= MaxHeaders || k == "" || k[0] == ':' {
			return
		}
		n++
		q.Header.Add(k, v)
	}
	for k, v := range h.GetHeaders() {
		add(k, v)
	}
	if len(h.GetHeaders()) == 0 {
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			add(hv.GetKey(), v)
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		q.Peer = p.Addr.String()
	}
	if sa := a.GetSource().GetAddress().GetSocketAddress(); sa != nil && sa.GetAddress() != "" {
		q.ReportedSource = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	}
	return q
}

// Response is the CheckResponse for v.
func Response(v gateway.Verdict) *authv3.CheckResponse {
	if v.Allowed() {
		ok := &authv3.OkHttpResponse{}
		id := http.Header{}
		v.SetIdentity(id)
		for k, vs := range id {
			for _, val := range vs {
				ok.Headers = append(ok.Headers, header(strings.ToLower(k), val))
			}
		}
		for _, k := range v.Remove {
			ok.HeadersToRemove = append(ok.HeadersToRemove, strings.ToLower(k))
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	code, httpCode := codes.Unauthenticated, typev3.StatusCode_Unauthorized
	if v.Status == http.StatusForbidden {
		code, httpCode = codes.PermissionDenied, typev3.StatusCode_Forbidden
	}
	challenge := http.Header{}
	v.Challenge(challenge)
	headers := []*corev3.HeaderValueOption{
		header(strings.ToLower(gateway.HeaderReason), string(v.Reason)),
		header("content-type", "application/json"),
		header("cache-control", "no-store"),
	}
	for k, vs := range challenge {
		headers = append(headers, header(strings.ToLower(k), vs[0]))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: string(v.Reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: headers,
			Body:    string(gateway.RefusalBody(v.Reason)),
		}},
	}
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// Interface guards.
var (
	_ authv3.AuthorizationServer = (*Server)(nil)
	_ Decider                    = (*gateway.Gateway)(nil)
)
