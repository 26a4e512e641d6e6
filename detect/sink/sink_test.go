package sink

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/detect"
)

func alert(i int) detect.Alert {
	t := time.Date(2025, 6, 24, 3, 0, i, 0, time.UTC)
	return detect.Alert{ID: "al-" + string(rune('a'+i)), Rule: "not_issued", Severity: detect.Critical, Entity: "kid:k1",
		Summary: "forged", FirstSeen: t, LastSeen: t, Raised: t, Count: 1, Incident: "inc-1"}
}

type receiver struct {
	mu      sync.Mutex
	got     []string
	failFor atomic.Int32 // answer 503 to this many requests first
	status  int          // a fixed answer other than 200, when set
	secret  []byte
	badSig  atomic.Int32
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.secret != nil && !Verify(r.secret, body, req.Header.Get(SignatureHeader)) {
		r.badSig.Add(1)
		w.WriteHeader(401)
		return
	}
	if r.failFor.Add(-1) >= 0 {
		w.WriteHeader(503)
		return
	}
	if r.status != 0 {
		w.WriteHeader(r.status)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, string(body))
	r.mu.Unlock()
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestWebhookRetriesUntilReceiverRecovers(t *testing.T) {
	secret := []byte("s3cret")
	rc := &receiver{secret: secret}
	rc.failFor.Store(6)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Secret: secret, SpoolDir: t.TempDir(), MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 5; i++ {
		if err := w.Send(alert(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "5 deliveries", func() bool { return rc.count() == 5 })
	for i, b := range rc.got {
		var a detect.Alert
		if err := json.Unmarshal([]byte(b), &a); err != nil || a.ID != alert(i).ID {
			t.Fatalf("delivery %d: %s", i, b)
		}
	}
	if rc.badSig.Load() != 0 {
		t.Fatal("bad signatures")
	}
	waitFor(t, "empty spool", func() bool { return w.Pending() == 0 })
}

// Alerts spooled while the receiver is down and custos restarts are delivered after.
func TestWebhookSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) }))
	w, err := NewWebhook(WebhookConfig{URL: down.URL, Secret: []byte("k"), SpoolDir: dir, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_ = w.Send(alert(i))
	}
	time.Sleep(50 * time.Millisecond)
	if n := w.Pending(); n != 3 {
		t.Fatalf("pending %d", n)
	}
	w.Close()
	down.Close()

	rc := &receiver{secret: []byte("k")}
	up := httptest.NewServer(rc)
	defer up.Close()
	w2, err := NewWebhook(WebhookConfig{URL: up.URL, Secret: []byte("k"), SpoolDir: dir, MinBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	waitFor(t, "3 deliveries after restart", func() bool { return rc.count() == 3 })
}

func TestWebhookDeadLetter(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		maxAttempts int
	}{
		{"fail/refused_400", 400, 0},
		{"fail/attempts_exhausted", 503, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := httptest.NewServer(&receiver{status: tc.status})
			defer srv.Close()
			w, _ := NewWebhook(WebhookConfig{URL: srv.URL, Secret: []byte("k"), SpoolDir: dir, MinBackoff: time.Millisecond, MaxAttempts: tc.maxAttempts})
			defer w.Close()
			_ = w.Send(alert(0))
			waitFor(t, "dead letter", func() bool {
				b, _ := os.ReadFile(filepath.Join(dir, "dead-letter.jsonl"))
				return bytes.Contains(b, []byte(alert(0).ID))
			})
		})
	}
}

func TestSlack(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Slack: true, SpoolDir: t.TempDir(), MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_ = w.Send(alert(0))
	waitFor(t, "slack message", func() bool { return rc.count() == 1 })
	var m map[string]string
	if err := json.Unmarshal([]byte(rc.got[0]), &m); err != nil || !strings.Contains(m["text"], "[critical] not_issued on kid:k1") || len(m) != 1 {
		t.Fatalf("%s", rc.got[0])
	}
}

func TestJSONSinks(t *testing.T) {
	var buf bytes.Buffer
	s := Stdout(&buf)
	s.OCSF = true
	_ = s.Send(alert(0))
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["class_uid"].(float64) != 2004 {
		t.Fatalf("%s", buf.String())
	}
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Send(alert(0))
	_ = f.Send(alert(1))
	f.Close()
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte("\n")); n != 2 {
		t.Fatalf("%d lines", n)
	}
}

func TestSyslog(t *testing.T) {
	t.Run("ok/udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		s, _ := NewSyslog("udp", pc.LocalAddr().String(), "")
		defer s.Close()
		if err := s.Send(alert(0)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "<82>1 2025-06-24T03:00:00Z ") || !strings.Contains(msg, ` custos - alert [custos@32473 id="al-a" rule="not_issued"`) {
			t.Fatalf("%s", msg)
		}
	})
	t.Run("ok/tcp_octet_counting", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan string, 2)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for i := 0; i < 2; i++ {
				var n int
				if _, err := fmtSscan(r, &n); err != nil {
					return
				}
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil {
					return
				}
				got <- string(b)
			}
		}()
		s, _ := NewSyslog("tcp", ln.Addr().String(), "shop")
		defer s.Close()
		_ = s.Send(alert(0))
		_ = s.Send(alert(1))
		for i := 0; i < 2; i++ {
			select {
			case m := <-got:
				if !strings.HasPrefix(m, "<82>1 ") || !strings.HasSuffix(m, "}") {
					t.Fatalf("%q", m)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("timeout")
			}
		}
	})
	t.Run("fail/network", func(t *testing.T) {
		if _, err := NewSyslog("unix", "/x", ""); err == nil {
			t.Fatal("accepted")
		}
	})
}

// fmtSscan reads "N " (the octet count and its space).
func fmtSscan(r *bufio.Reader, n *int) (int, error) {
	s, err := r.ReadString(' ')
	if err != nil {
		return 0, err
	}
	var v int
	for _, c := range strings.TrimSpace(s) {
		v = v*10 + int(c-'0')
	}
	*n = v
	return 1, nil
}
