package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// `custos serve` and `custos gateway --decide --grpc-listen` as separate
// processes: forward auth and Envoy's gRPC Check decide alike for an issued
// token, a subject mismatch and a forged path; a key revocation at the
// authority reaches both; the flags that exclude each other exit 2.
func TestDecideProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildCustos(t, dir)
	for _, args := range [][]string{
		{"gateway", "--decide", "--upstream", "http://127.0.0.1:1"},
		{"gateway", "--grpc-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"},
		{"gateway"},
	} {
		var ee *exec.ExitError
		if out, err := exec.Command(bin, args...).CombinedOutput(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit 2\n%s", args, err, out)
		}
	}

	api, inproc, decide, grpcAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	data := filepath.Join(dir, "data")
	// One configuration file for both processes, as a shop would keep it:
	// --decide on the command line sets the upstream aside.
	conf := filepath.Join(dir, "custos.yaml")
	y := "issuer: http://" + api + "\ngateway:\n  upstream: http://127.0.0.1:1\n  listen: " + inproc +
		"\n  routes:\n    - pattern: GET /api/members/{memberId}/profile\n      data_classes: [name, email]\n      subject_param: memberId\n"
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	call, admin, _, tok := startAuthority(t, bin, data, api, conf)

	logs := startProcess(t, bin, "gateway", "--decide", "--config", conf, "--listen", decide, "--grpc-listen", grpcAddr,
		"--authority", "http://"+api, "--data", data)
	forward := func(target string) (int, http.Header) {
		req, _ := http.NewRequest("GET", "http://"+decide+"/v1/decide", nil)
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", target)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ac := authv3.NewAuthorizationClient(conn)
	check := func(path string) (codes.Code, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := ac.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Host: "shop.example",
				Headers: map[string]string{"authorization": "Bearer " + tok.AccessToken}}}}})
		if err != nil {
			return codes.Unavailable, err.Error()
		}
		return codes.Code(resp.GetStatus().GetCode()), resp.GetStatus().GetMessage()
	}
	waitFor(t, "the decision API to allow the issued token", func() bool {
		st, _ := forward("/api/members/1020/profile")
		return st == 200
	})
	if st, h := forward("/api/members/1020/profile"); st != 200 || h.Get("X-Custos-Subject") != "1020" || h.Get("X-Custos-Kid") != tok.KID {
		t.Errorf("allow: %d %v", st, h)
	}
	if c, msg := check("/api/members/1020/profile"); c != codes.OK {
		t.Errorf("gRPC allow: %v %s", c, msg)
	}
	for target, want := range map[string]string{
		"/api/members/1021/profile":         "subject_mismatch",
		"/api/members/1021/../1020/profile": "unknown_route",
		"/api/members/%31%30%32%30/profile": "unknown_route",
		"/api/admin":                        "unknown_route",
	} {
		if st, h := forward(target); st != 401 || h.Get("X-Custos-Reason") != want {
			t.Errorf("forward auth %s: %d %q, want 401 %s", target, st, h.Get("X-Custos-Reason"), want)
		}
		if c, msg := check(target); c != codes.Unauthenticated || msg != want {
			t.Errorf("gRPC %s: %v %q, want Unauthenticated %s", target, c, msg, want)
		}
	}
	if st := call("/v1/keys/"+tok.KID+"/revoke", admin, map[string]string{"reason": "test"}, nil); st != 200 {
		t.Fatalf("revoke key: %d", st)
	}
	at := time.Now()
	waitFor(t, "both decision endpoints to refuse revoked_key", func() bool {
		st, h := forward("/api/members/1020/profile")
		c, msg := check("/api/members/1020/profile")
		return st == 401 && h.Get("X-Custos-Reason") == "revoked_key" && c == codes.Unauthenticated && msg == "revoked_key"
	})
	t.Logf("key revocation reached the decision API process in %s", time.Since(at).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "decision API") {
		t.Errorf("the decide process does not say what it serves:\n%s", logs)
	}
}
