package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/event"
)

// authorityStub records the events posted to /v1/events and answers with
// the status that answer() gives for each attempt.
type authorityStub struct {
	mu       sync.Mutex
	got      []event.Access
	attempts atomic.Int64
	answer   func(attempt int64) int
}

func (a *authorityStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/events" || r.URL.Query().Get("format") != "custos" || r.Header.Get("Authorization") != "Bearer cred" {
		http.Error(w, "wrong request", http.StatusTeapot)
		return
	}
	n := a.attempts.Add(1)
	if st := a.answer(n); st != http.StatusOK {
		http.Error(w, "not now", st)
		return
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	var evs []event.Access
	for sc.Scan() {
		var ev event.Access
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		evs = append(evs, ev)
	}
	a.mu.Lock()
	a.got = append(a.got, evs...)
	a.mu.Unlock()
	w.Write([]byte(`{"events":` + strconv.Itoa(len(evs)) + `}`))
}

func (a *authorityStub) events() []event.Access {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]event.Access(nil), a.got...)
}

type withCred struct{ rt http.RoundTripper }

func (b withCred) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer cred")
	return b.rt.RoundTrip(r)
}

// runForwarder publishes n events through a bus into a Forwarder posting to
// stub, drains the bus as a graceful stop does and returns the forwarder.
func runForwarder(t *testing.T, stub *authorityStub, n int) *Forwarder {
	t.Helper()
	srv := httptest.NewServer(stub)
	defer srv.Close()
	f := &Forwarder{URL: srv.URL, Client: &http.Client{Transport: withCred{http.DefaultTransport}}, MaxBatch: 100, Window: 20 * time.Millisecond}
	bus := event.NewBus()
	sub := bus.Subscribe(1<<14, true)
	done := make(chan struct{})
	go func() { f.Run(context.Background(), sub.C); close(done) }()
	for i := range n {
		bus.Publish(event.Access{RequestID: strconv.Itoa(i), Status: 200, Reason: event.ReasonNotIssued})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub.Drain(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("forwarder did not finish")
	}
	return f
}

// Every event reaches the authority once and in order, in batches; an
// authority that fails for a while (503, then 401) loses nothing.
func TestForwarderDeliversThroughFailures(t *testing.T) {
	for name, answer := range map[string]func(int64) int{
		"healthy": func(int64) int { return http.StatusOK },
		"unavailable first": func(n int64) int {
			return map[bool]int{true: http.StatusServiceUnavailable, false: http.StatusOK}[n <= 3]
		},
		"credential late": func(n int64) int { return map[bool]int{true: http.StatusUnauthorized, false: http.StatusOK}[n <= 2] },
	} {
		t.Run(name, func(t *testing.T) {
			stub := &authorityStub{answer: answer}
			f := runForwarder(t, stub, 1000)
			got := stub.events()
			if len(got) != 1000 || f.Sent() != 1000 {
				t.Fatalf("authority got %d events, forwarder counted %d sent", len(got), f.Sent())
			}
			for i, ev := range got {
				if ev.RequestID != strconv.Itoa(i) || ev.Reason != event.ReasonNotIssued {
					t.Fatalf("event %d is %+v", i, ev)
				}
			}
			if stub.attempts.Load() > 100 {
				t.Fatalf("%d posts for 1000 events: not batched", stub.attempts.Load())
			}
			if name != "healthy" && f.Failures() == 0 {
				t.Fatal("failures not counted")
			}
		})
	}
}

// A batch the authority refuses as bad is not retried for ever: it is
// counted as rejected and the events after it still go through.
func TestForwarderRejectedBatch(t *testing.T) {
	stub := &authorityStub{answer: func(n int64) int {
		if n == 1 {
			return http.StatusBadRequest
		}
		return http.StatusOK
	}}
	f := runForwarder(t, stub, 300)
	if f.Rejected() == 0 || f.Rejected()+uint64(len(stub.events())) != 300 {
		t.Fatalf("rejected %d, delivered %d of 300", f.Rejected(), len(stub.events()))
	}
}
