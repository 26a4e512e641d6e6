package audit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// The witness's status follows its polls: ok after an accepted checkpoint,
// 0 with an alarm counted after a rollback, and a failed poll apart.
func TestWitnessMetrics(t *testing.T) {
	k := newTestKey(t)
	honest := buildLog(t, k, 300)
	var mu sync.Mutex
	serve, down := honest, false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		d, off := serve, down
		mu.Unlock()
		if off {
			w.WriteHeader(503)
			return
		}
		NewHandler(d).ServeHTTP(w, r)
	}))
	defer srv.Close()
	reg := prometheus.NewPedanticRegistry()
	at := time.Unix(1750734000, 0)
	w := &Witness{URL: srv.URL + "/audit/checkpoint", Verifier: k.verifier, StateFile: filepath.Join(t.TempDir(), "state"),
		OnCheck: WitnessMetrics(reg, func() time.Time { return at })}
	ctx := context.Background()
	check := func(name string, want string) {
		t.Helper()
		_, _ = w.Check(ctx)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "custos_audit_witness_ok", "custos_audit_witness_alarms_total",
			"custos_audit_witness_failed_polls_total", "custos_audit_witness_checkpoint_entries"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	const head = `# HELP custos_audit_witness_alarms_total Rollbacks, forks and badly signed checkpoints the witness found.
# TYPE custos_audit_witness_alarms_total counter
custos_audit_witness_alarms_total %d
# HELP custos_audit_witness_checkpoint_entries Entries in the last checkpoint the witness accepted.
# TYPE custos_audit_witness_checkpoint_entries gauge
custos_audit_witness_checkpoint_entries %d
# HELP custos_audit_witness_failed_polls_total Polls that could not fetch or read the checkpoint (not alarms).
# TYPE custos_audit_witness_failed_polls_total counter
custos_audit_witness_failed_polls_total %d
# HELP custos_audit_witness_ok 1 when the witness's last poll accepted a signed checkpoint consistent with the one before, else 0.
# TYPE custos_audit_witness_ok gauge
custos_audit_witness_ok %d
`
	f := func(alarms, entries, failed, ok int) string { return fmt.Sprintf(head, alarms, entries, failed, ok) }
	check("ok/accepted", f(0, 300, 0, 1))
	mu.Lock()
	serve = buildLog(t, k, 100)
	mu.Unlock()
	check("fail/rollback", f(1, 300, 0, 0))
	mu.Lock()
	serve, down = honest, true
	mu.Unlock()
	check("fail/unreachable", f(1, 300, 1, 0))
	mu.Lock()
	down = false
	mu.Unlock()
	check("ok/back", f(1, 300, 1, 1))
	// The exposition passes promlint.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", err, problems)
	}
}
