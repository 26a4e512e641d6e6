package detect

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// suspender is a recorder that can also suspend clients.
type suspender struct{ recorder }

func (s *suspender) SuspendClient(_ context.Context, id, _ string) error {
	return s.add("suspend " + id)
}

// TestSuspendClient: an issuance alert under suspend_client suspends the
// client it names, once; a containment that cannot suspend records why.
func TestSuspendClient(t *testing.T) {
	pol := func(c *Config) {
		c.Containment = map[string]ContainPolicy{RuleIssuanceNoLogin: {Action: ActionSuspendClient}}
	}
	stolen := func(e *Engine) {
		for i := range 100 {
			e.Issued(Issuance{Time: t0.Add(time.Duration(i) * time.Second), RequestID: "a" + strconv.Itoa(i), Client: "cl-login", Subject: strconv.Itoa(5_000_000 + i*7919)})
		}
	}
	e := newEngine(t, pol)
	s := &suspender{}
	e.SetContainment(s)
	stolen(e)
	acts := e.Actions()
	if len(acts) != 1 || acts[0].Action != ActionSuspendClient || acts[0].Target != "cl-login" || acts[0].Error != "" {
		t.Fatalf("actions %+v", acts)
	}
	if len(s.calls) != 1 || s.calls[0] != "suspend cl-login" {
		t.Fatalf("calls %v", s.calls)
	}
	e = newEngine(t, pol)
	e.SetContainment(&recorder{})
	stolen(e)
	if acts := e.Actions(); len(acts) != 1 || acts[0].Error != ErrCannotSuspend.Error() {
		t.Fatalf("actions %+v, want the failure recorded", acts)
	}
	if !errors.Is(execute(context.Background(), &recorder{}, ActionRecord{Action: ActionSuspendClient, Target: "x"}), ErrCannotSuspend) {
		t.Fatal("execute without a ClientSuspender")
	}
}
