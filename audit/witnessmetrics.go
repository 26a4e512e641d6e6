package audit

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
)

// WitnessMetrics registers the witness's status on reg and returns the
// [Witness.OnCheck] that keeps it: custos_audit_witness_ok (1 while the
// last poll accepted a consistent checkpoint), the size and time of the
// last accepted checkpoint, and counts of alarms and failed polls.
func WitnessMetrics(reg prometheus.Registerer, now func() time.Time) func(*log.Checkpoint, error) {
	ok := prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_audit_witness_ok",
		Help: "1 when the witness's last poll accepted a signed checkpoint consistent with the one before, else 0."})
	size := prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_audit_witness_checkpoint_entries",
		Help: "Entries in the last checkpoint the witness accepted."})
	last := prometheus.NewGauge(prometheus.GaugeOpts{Name: "custos_audit_witness_last_accepted_timestamp_seconds",
		Help: "Unix time of the witness's last accepted poll."})
	alarms := prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_audit_witness_alarms_total",
		Help: "Rollbacks, forks and badly signed checkpoints the witness found."})
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "custos_audit_witness_failed_polls_total",
		Help: "Polls that could not fetch or read the checkpoint (not alarms)."})
	reg.MustRegister(ok, size, last, alarms, failures)
	return func(cp *log.Checkpoint, err error) {
		switch {
		case err == nil:
			ok.Set(1)
			size.Set(float64(cp.Size))
			last.Set(float64(now().UnixMilli()) / 1000)
		case errors.Is(err, ErrRollback) || errors.Is(err, ErrFork) || errors.Is(err, ErrBadCheckpoint):
			ok.Set(0)
			alarms.Inc()
		default:
			ok.Set(0)
			failures.Inc()
		}
	}
}
