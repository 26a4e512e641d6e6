package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/codes"

	"github.com/custos-dev/custos/authority"
	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/forensics"
	"github.com/custos-dev/custos/ledger"
	"github.com/custos-dev/custos/natsbus"
)

// The metrics of every part are registered on one registry per process and
// served at /metrics. Families follow the Prometheus naming conventions
// (custos_<part>_<what>_<unit>, counters end in _total) and are checked by
// promlint in the tests. Each is listed in docs/DESIGN.md.

// NewRegistry is a registry with the Go runtime, process and build metrics.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	return r
}

// buildInfo is custos_build_info{version,revision,goversion} 1.
func buildInfo() prometheus.Collector {
	version, revision, gover := readVersion(), "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		gover = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "custos_build_info",
		Help:        "Always 1; the labels say which build of custos runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": gover},
	})
	g.Set(1)
	return g
}

// readVersion is the module version the build recorded.
func readVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(unknown)"
}

// issuanceEndpoints are the routes that issue tokens; their answers feed the
// issuance metrics.
var issuanceEndpoints = map[string]bool{"POST /v1/tokens": true, "POST /oauth2/token": true}

// serverMetrics are the families the server itself observes.
type serverMetrics struct {
	httpRequests *prometheus.CounterVec   // handler, method, code
	httpDuration *prometheus.HistogramVec // handler
	issued       prometheus.Counter
	issueLatency prometheus.Histogram
	refusals     *prometheus.CounterVec // error
	commit       prometheus.Histogram
	commitErrors prometheus.Counter
	alerts       *prometheus.CounterVec // rule, severity
	detectLag    prometheus.Histogram
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_http_requests_total",
			Help: "Requests answered by the authority's API, by route pattern, method and status code.",
		}, []string{"handler", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "custos_http_request_duration_seconds",
			Help:    "Time to answer a request of the authority's API, by route pattern.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 10, 18),
		}, []string{"handler"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custos_tokens_issued_total",
			Help: "Access tokens issued and recorded in the ledger.",
		}),
		issueLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "custos_issuance_duration_seconds",
			Help:    "Time to answer an issuance request (POST /v1/tokens, POST /oauth2/token), refusals included.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 5, 17),
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_issuance_refusals_total",
			Help: "Issuance requests refused, by the OAuth error code of the answer.",
		}, []string{"error"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "custos_ledger_commit_duration_seconds",
			Help:    "Time for an issued token's record to be durable in the ledger (group commit included).",
			Buckets: prometheus.ExponentialBucketsRange(20e-6, 5, 18),
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "custos_ledger_commit_errors_total",
			Help: "Ledger puts that failed; the token was not handed out.",
		}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_detect_alerts_total",
			Help: "Alerts raised, by rule and severity.",
		}, []string{"rule", "severity"}),
		detectLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "custos_detect_lag_seconds",
			Help:    "Time from an access event to its evaluation by detection (the newest event of each batch).",
			Buckets: prometheus.ExponentialBucketsRange(1e-4, 600, 20),
		}),
	}
}

// refusalCodes are the error codes an issuance refusal can carry (RFC 6749
// §5.2, RFC 8693, RFC 9449); their series exist from the start at zero.
var refusalCodes = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "invalid_target", "invalid_dpop_proof", "access_denied",
	"server_error", "temporarily_unavailable", "other"}

func (m *serverMetrics) collectors() []prometheus.Collector {
	for _, c := range refusalCodes {
		m.refusals.WithLabelValues(c)
	}
	return []prometheus.Collector{m.httpRequests, m.httpDuration, m.issued, m.issueLatency, m.refusals,
		m.commit, m.commitErrors, m.alerts, m.detectLag}
}

// registerMetrics registers the families of every part this server runs.
func (s *Server) registerMetrics() {
	m := s.metrics
	s.Registry.MustRegister(m.collectors()...)
	s.Ledger.Subscribe(func(r ledger.Record) {
		if !r.Revoked {
			m.issued.Inc()
		}
	})
	s.Detect.OnAlert(func(a detect.Alert) { m.alerts.WithLabelValues(a.Rule, string(a.Severity)).Inc() })
	s.Registry.MustRegister(detectEvents(s.Detect))
	ix := s.Ledger.Index()
	s.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "custos_ledger_entries",
			Help: "Records (live and revoked, until they expire) in the ledger's in-memory index.",
		}, func() float64 { return float64(ix.Len()) }),
		&auditCollector{s: s},
		&forensicsCollector{w: s.Forensics},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "custos_store_errors_total",
			Help:        "Statements of the control-plane store that failed (PostgreSQL; 0 on SQLite).",
			ConstLabels: prometheus.Labels{"engine": s.DB.Dialect},
		}, func() float64 { return float64(s.DB.Errors()) }),
	)
	if rb, ok := s.ledgerBackend.(interface{ Errors() uint64 }); ok {
		s.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "custos_ledger_backend_errors_total",
			Help:        "Commands of the ledger's shared backend (Redis) that failed.",
			ConstLabels: prometheus.Labels{"engine": "redis"},
		}, func() float64 { return float64(rb.Errors()) }))
	}
}

func detectEvents(e *detect.Engine) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "custos_detect_events_total",
		Help: "Access events evaluated by detection.",
	}, func() float64 { return float64(e.Events()) })
}

// registerDetection adds the metrics of a detection engine that runs on its
// own (the detector role).
func registerDetection(reg prometheus.Registerer, e *detect.Engine) {
	m := newServerMetrics()
	reg.MustRegister(m.alerts, detectEvents(e))
	e.OnAlert(func(a detect.Alert) { m.alerts.WithLabelValues(a.Rule, string(a.Severity)).Inc() })
}

// RegisterBus adds the NATS consumer lag of b to reg.
func RegisterBus(reg prometheus.Registerer, b *natsbus.Bus) {
	reg.MustRegister(&busCollector{b: b})
}

var busPendingDesc = prometheus.NewDesc("custos_nats_consumer_pending_messages",
	"Messages waiting in JetStream behind the last one delivered to this process's durable consumer.", []string{"consumer"}, nil)

var busReclaimedDesc = prometheus.NewDesc("custos_nats_consumer_reclaimed_total",
	"Messages a durable consumer of this process read back at start because the process before it was delivered them and never acknowledged them.", nil, nil)

type busCollector struct{ b *natsbus.Bus }

func (c *busCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- busPendingDesc
	ch <- busReclaimedDesc
}
func (c *busCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(busReclaimedDesc, prometheus.CounterValue, float64(c.b.Reclaimed()))
	for name, n := range c.b.Pending() {
		ch <- prometheus.MustNewConstMetric(busPendingDesc, prometheus.GaugeValue, float64(n), name)
	}
}

var (
	auditSizeDesc = prometheus.NewDesc("custos_audit_entries_total",
		"Entries appended to the audit log and covered by its checkpoint.", nil, nil)
	auditAgeDesc = prometheus.NewDesc("custos_audit_checkpoint_age_seconds",
		"Seconds since the audit log's signed checkpoint was last written.", nil, nil)
	auditUpDesc = prometheus.NewDesc("custos_audit_checkpoint_readable",
		"1 when the audit log's checkpoint could be read at the last scrape, else 0.", nil, nil)
)

// auditCollector reads the audit log's size and checkpoint at scrape time.
type auditCollector struct{ s *Server }

func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- auditSizeDesc
	ch <- auditAgeDesc
	ch <- auditUpDesc
}

func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.s.Audit.Size(ctx)
	up := 1.0
	if err != nil {
		up = 0
	} else {
		ch <- prometheus.MustNewConstMetric(auditSizeDesc, prometheus.CounterValue, float64(n))
	}
	if fi, err := os.Stat(filepath.Join(c.s.Audit.Dir(), "checkpoint")); err == nil {
		ch <- prometheus.MustNewConstMetric(auditAgeDesc, prometheus.GaugeValue, c.s.now().Sub(fi.ModTime()).Seconds())
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(auditUpDesc, prometheus.GaugeValue, up)
}

var (
	fxWrittenDesc = prometheus.NewDesc("custos_forensics_rows_written_total",
		"Access events written to the forensics event store.", nil, nil)
	fxSealedDesc = prometheus.NewDesc("custos_forensics_rows_sealed_total",
		"Access events in sealed event files, visible to scopes and SQL.", nil, nil)
	fxLagDesc = prometheus.NewDesc("custos_forensics_seal_lag_seconds",
		"Age of the oldest event file not yet sealed (0 when every file is sealed): how far readers are behind.", nil, nil)
)

// forensicsCollector reads the event writer's counts at scrape time.
type forensicsCollector struct{ w *forensics.Writer }

func (c *forensicsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fxWrittenDesc
	ch <- fxSealedDesc
	ch <- fxLagDesc
}

func (c *forensicsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Stats()
	lag := 0.0
	if !st.OldestOpen.IsZero() {
		lag = time.Since(st.OldestOpen).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(fxWrittenDesc, prometheus.CounterValue, float64(st.Written))
	ch <- prometheus.MustNewConstMetric(fxSealedDesc, prometheus.CounterValue, float64(st.Sealed))
	ch <- prometheus.MustNewConstMetric(fxLagDesc, prometheus.GaugeValue, lag)
}

// meteredLedger times the puts of issuance.
type meteredLedger struct {
	*ledger.Ledger
	m *serverMetrics
}

func (l meteredLedger) Put(ctx context.Context, e ledger.Entry) error {
	t := time.Now()
	ctx, span := traceChild(ctx, "ledger.put")
	err := l.Ledger.Put(ctx, e)
	if span != nil {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	l.m.commit.Observe(time.Since(t).Seconds())
	if err != nil {
		l.m.commitErrors.Inc()
	}
	return err
}

var _ authority.Ledger = meteredLedger{}

// instrument counts and times every request of the API by its route pattern;
// the answers of the issuance routes also feed the issuance metrics.
func (s *Server) instrument(mux *http.ServeMux) http.Handler {
	m := s.metrics
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		_, pattern := mux.Handler(r)
		handler := pattern
		if handler == "" {
			handler = "unmatched"
		}
		issue := issuanceEndpoints[pattern]
		rw := &statusWriter{ResponseWriter: w, code: http.StatusOK, keep: issue}
		r, span := s.traceRequest(r, handler)
		mux.ServeHTTP(rw, r)
		endRequestSpan(span, rw.code)
		d := time.Since(t).Seconds()
		m.httpRequests.WithLabelValues(handler, methodLabel(r.Method), strconv.Itoa(rw.code)).Inc()
		m.httpDuration.WithLabelValues(handler).Observe(d)
		if issue {
			m.issueLatency.Observe(d)
			if rw.code >= 400 {
				m.refusals.WithLabelValues(errorCode(rw.body.Bytes())).Inc()
			}
		}
	})
}

// methodLabel keeps the method label to the methods of HTTP, so a client
// cannot grow the series without bound.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
		return m
	}
	return "other"
}

// errorCode is the "error" of a JSON error answer, if it is a short
// lower-case code, else "other".
func errorCode(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error == "" || len(e.Error) > 40 {
		return "other"
	}
	for _, c := range e.Error {
		if (c < 'a' || c > 'z') && c != '_' {
			return "other"
		}
	}
	return e.Error
}

// statusWriter records the status code, and the start of the body when keep.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
	keep        bool
	body        bytes.Buffer
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	if w.keep && w.body.Len() < 512 {
		w.body.Write(b[:min(len(b), 512-w.body.Len())])
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets server-sent events through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
