package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const exportInput = `{"time":"2025-06-24T03:00:00Z","gateway":"gw1","request_id":"r1","method":"GET","route":"GET /api/members/{memberId}/profile","path":"/api/members/7/profile","status":401,"verdict":"deny","reason":"not_issued","src_ip":"203.0.113.9","token":{"jti":"j","kid":"k1","sub":"7"}}

{"id":"al-1","rule":"not_issued","severity":"critical","entity":"kid:k1","summary":"forged","raised":"2025-06-24T03:00:01Z","count":3,"incident_id":"inc-1","sample_event_ids":["r1"]}
`

func TestExport(t *testing.T) {
	t.Run("ok/ocsf", func(t *testing.T) {
		var out bytes.Buffer
		n, err := Export(strings.NewReader(exportInput), &out, OCSF)
		if err != nil || n != 2 {
			t.Fatalf("%d %v", n, err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		for i, want := range []float64{4002, 2004} {
			var o map[string]any
			if err := json.Unmarshal([]byte(lines[i]), &o); err != nil || o["class_uid"] != want {
				t.Fatalf("line %d: %s", i, lines[i])
			}
		}
		if !strings.Contains(lines[0], `"status_detail":"not_issued"`) {
			t.Fatalf("%s", lines[0])
		}
	})
	t.Run("ok/native_round_trip", func(t *testing.T) {
		var out bytes.Buffer
		if n, err := Export(strings.NewReader(exportInput), &out, Native); err != nil || n != 2 {
			t.Fatalf("%d %v", n, err)
		}
		if !strings.Contains(out.String(), `"request_id":"r1"`) || !strings.Contains(out.String(), `"incident_id":"inc-1"`) {
			t.Fatal(out.String())
		}
	})
	for _, c := range []struct{ name, in string }{
		{"fail/not_json", "GET / 200\n"},
		{"fail/other_object", `{"hello":"world"}` + "\n"},
		{"fail/bad_verdict", `{"time":"2025-06-24T03:00:00Z","verdict":"maybe"}` + "\n"},
		{"fail/bad_time", `{"time":"yesterday","verdict":"allow"}` + "\n"},
		{"fail/line_too_long", `{"time":"` + strings.Repeat("x", MaxExportLine) + `"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Export(strings.NewReader(exportInput+c.in), &out, OCSF)
			if err == nil || !strings.HasPrefix(err.Error(), "line 4:") {
				t.Fatalf("%v", err)
			}
			if c.name != "fail/line_too_long" && !errors.Is(err, ErrRecord) {
				t.Fatalf("%v", err)
			}
		})
	}
}

func FuzzExport(f *testing.F) {
	for _, l := range strings.Split(exportInput, "\n") {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"rule":null,"incident_id":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, format := range []Format{Native, OCSF} {
			var out bytes.Buffer
			n, err := Export(bytes.NewReader(b), &out, format)
			if err == nil && bytes.Count(out.Bytes(), []byte("\n")) != n {
				t.Fatalf("%d records, %d lines", n, bytes.Count(out.Bytes(), []byte("\n")))
			}
			for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
				if len(l) > 0 && !json.Valid(l) {
					t.Fatalf("invalid output %q", l)
				}
			}
		}
	})
}
