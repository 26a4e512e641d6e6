package ingest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/custos-dev/custos/event"
)

// failAfter yields s, then fails: a body cut off by the network.
type failAfter struct{ r io.Reader }

func (f *failAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

// POST /v1/events refuses a body with no valid line or an unreadable body
// with 400 and stores nothing; a body with some valid lines stores exactly
// those and says how many lines were rejected.
func TestHandlerBodies(t *testing.T) {
	claim := `{"time":"2025-06-24T03:00:00Z","request_id":"c1","status":401,"verdict":"deny","reason":"not_issued","token":{"kid":"never-known"}}`
	dupe := `{"time":"2025-06-24T03:00:00Z","request_id":"d1","subject":"1020","SUBJECT":"1021","status":200}`
	cases := []struct {
		name     string
		query    string
		body     func() io.Reader
		status   int
		events   int
		rejected int
		reported string
	}{
		{"fail/empty", "", func() io.Reader { return strings.NewReader("") }, 400, 0, 0, ""},
		{"fail/blank lines", "", func() io.Reader { return strings.NewReader("\n\n  \r\n\t\n") }, 400, 0, 0, ""},
		{"fail/garbage", "", func() io.Reader { return strings.NewReader("hello\nworld") }, 400, 0, 2, ""},
		{"fail/binary", "", func() io.Reader { return strings.NewReader("\x00\xff\xfe{") }, 400, 0, 1, ""},
		{"fail/json not an event", "", func() io.Reader { return strings.NewReader(`[1,2]` + "\n" + `"x"` + "\n" + `{}`) }, 400, 0, 3, ""},
		{"fail/unknown field", "", func() io.Reader {
			return strings.NewReader(`{"time":"2025-06-24T03:00:00Z","admin":true}`)
		}, 400, 0, 1, ""},
		{"fail/duplicate key any case", "", func() io.Reader { return strings.NewReader(dupe) }, 400, 0, 1, ""},
		{"fail/garbage nginx", "?format=nginx", func() io.Reader { return strings.NewReader("garbage\n") }, 400, 0, 1, ""},
		{"fail/duplicate key nginx", "?format=nginx", func() io.Reader {
			return strings.NewReader(strings.Replace(nginxLine, `"status":"200"`, `"status":"200","STATUS":"401"`, 1))
		}, 400, 0, 1, ""},
		{"fail/cut off after good lines", "", func() io.Reader { return &failAfter{strings.NewReader(custosLine + "\n" + custosLine + "\n")} }, 400, 0, 0, ""},
		{"fail/unknown source", "?source=sidecar", func() io.Reader { return strings.NewReader(custosLine) }, 400, 0, 0, ""},
		{"fail/gateway source foreign format", "?format=nginx&source=gateway", func() io.Reader { return strings.NewReader(nginxLine) }, 400, 0, 0, ""},
		{"ok/some rejected", "", func() io.Reader {
			return strings.NewReader(strings.Join([]string{custosLine, "garbage", dupe, claim, "", `{"time":"bad"}`}, "\n"))
		}, 200, 2, 3, event.ReportedLog},
		{"ok/line claims not reported", "", func() io.Reader {
			return strings.NewReader(strings.Replace(custosLine, `"status":200`, `"status":200,"reported":""`, 1))
		}, 200, 1, 0, event.ReportedLog},
		{"ok/nginx is reported", "?format=nginx", func() io.Reader { return strings.NewReader(nginxLine) }, 200, 1, 0, event.ReportedLog},
		{"ok/envoy is reported", "?format=envoy&source=", func() io.Reader { return strings.NewReader(envoyLine) }, 200, 1, 0, event.ReportedLog},
		{"ok/gateway own", "?format=custos&source=gateway", func() io.Reader { return strings.NewReader(custosLine + "\n" + claim) }, 200, 2, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []event.Access
			h := Handler(nil, func(ev event.Access) { got = append(got, ev) })
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/events"+tc.query, tc.body()))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if len(got) != tc.events {
				t.Fatalf("%d events stored, want %d", len(got), tc.events)
			}
			var ans struct {
				Error string `json:"error"`
				Stats
				Inner *Stats `json:"stats"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatalf("answer %q: %v", rec.Body, err)
			}
			st := ans.Stats
			if ans.Inner != nil {
				st = *ans.Inner
			}
			if tc.status == 400 && ans.Error != "invalid_request" {
				t.Fatalf("error %q, want invalid_request", ans.Error)
			}
			if st.Malformed != tc.rejected || (tc.status == 200 && st.Events != tc.events) {
				t.Fatalf("answer says %d events, %d malformed; want %d, %d: %s", st.Events, st.Malformed, tc.events, tc.rejected, rec.Body)
			}
			if tc.rejected > 0 && len(st.Errors) != tc.rejected {
				t.Fatalf("answer names %d line errors, want %d", len(st.Errors), tc.rejected)
			}
			for _, ev := range got {
				if ev.Reported != tc.reported {
					t.Fatalf("event %s reported %q, want %q", ev.RequestID, ev.Reported, tc.reported)
				}
			}
		})
	}
}

// FuzzHandler: whatever the body, POST /v1/events answers 200 with at least
// one event stored, every one of them marked as reported by a log, or 400
// with nothing stored.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(custosLine + "\nx\n" + custosLine))
	f.Add([]byte(""))
	f.Add([]byte("garbage"))
	f.Add([]byte(strings.Replace(custosLine, `"status":200`, `"status":200,"reported":""`, 1)))
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []event.Access
		h := Handler(nil, func(ev event.Access) { got = append(got, ev) })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(string(body))))
		switch rec.Code {
		case http.StatusOK:
			if len(got) == 0 {
				t.Fatal("200 with no event stored")
			}
		case http.StatusBadRequest:
			if len(got) != 0 {
				t.Fatalf("400 with %d events stored", len(got))
			}
		default:
			t.Fatalf("status %d", rec.Code)
		}
		for _, ev := range got {
			if ev.Reported != event.ReportedLog {
				t.Fatalf("event stored with reported %q", ev.Reported)
			}
		}
	})
}
