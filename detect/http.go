package detect

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/wire"
)

// broker fans new alerts out to stream clients; a client too slow to keep
// up loses alerts (counted) rather than slowing detection.
type broker struct {
	mu      sync.Mutex
	clients map[chan Alert]struct{}
	dropped atomic.Uint64
}

func (b *broker) subscribe() chan Alert {
	ch := make(chan Alert, 256)
	b.mu.Lock()
	if b.clients == nil {
		b.clients = make(map[chan Alert]struct{})
	}
	b.clients[ch] = struct{}{}
	b.mu.Unlock()
	return ch
}

func (b *broker) unsubscribe(ch chan Alert) {
	b.mu.Lock()
	delete(b.clients, ch)
	b.mu.Unlock()
}

func (b *broker) publish(a Alert) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.clients {
		select {
		case ch <- a:
		default:
			b.dropped.Add(1)
		}
	}
}

// Relay shows an alert raised by another process (a detector instance) on
// the live stream (GET /v1/alerts/stream). It is not delivered to OnAlert
// subscribers: sinks, audit and containment are the raising process's.
func (e *Engine) Relay(a Alert) { e.stream.publish(a) }

// Handler serves the detection API:
//
//	GET /v1/alerts?rule=R&severity=S&limit=N   newest first (default limit 100, at most 10000)
//	GET /v1/alerts/stream                      server-sent events, one "alert" event per new alert
//	GET /v1/incidents                          newest first
//	GET /v1/incidents/{id}                     the incident with its alerts
//
// Authentication is the caller's to wrap around it.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/alerts", e.listAlerts)
	mux.HandleFunc("GET /v1/alerts/stream", e.streamAlerts)
	mux.HandleFunc("GET /v1/incidents", e.listIncidents)
	mux.HandleFunc("GET /v1/incidents/{id}", e.getIncident)
	return mux
}

func limitOf(r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 100, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10000 {
		return 0, false
	}
	return n, true
}

func (e *Engine) listAlerts(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitOf(r)
	if !ok {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "limit must be 1..10000")
		return
	}
	q := r.URL.Query()
	out, err := e.ListAlerts(r.Context(), AlertQuery{Rule: q.Get("rule"), Severity: Severity(q.Get("severity")), Limit: limit})
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "alerts unavailable")
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"alerts": orEmpty(out)})
}

func (e *Engine) listIncidents(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitOf(r)
	if !ok {
		wire.WriteError(w, http.StatusBadRequest, "invalid_request", "limit must be 1..10000")
		return
	}
	out, err := e.ListIncidents(r.Context(), limit)
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "incidents unavailable")
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"incidents": orEmpty(out)})
}

func (e *Engine) getIncident(w http.ResponseWriter, r *http.Request) {
	inc, alerts, ok, err := e.FindIncident(r.Context(), r.PathValue("id"))
	switch {
	case err != nil:
		wire.WriteError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "incidents unavailable")
		return
	case !ok:
		wire.WriteError(w, http.StatusNotFound, "not_found", "no such incident")
		return
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"incident": inc, "alerts": alerts})
}

// orEmpty makes a nil list encode as [] rather than null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (e *Engine) streamAlerts(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		wire.WriteError(w, http.StatusInternalServerError, "server_error", "streaming unsupported")
		return
	}
	ch := e.stream.subscribe()
	defer e.stream.unsubscribe(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": custos alerts\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case a := <-ch:
			b, _ := json.Marshal(a)
			fmt.Fprintf(w, "id: %s\nevent: alert\ndata: %s\n\n", a.ID, b)
			fl.Flush()
		}
	}
}
