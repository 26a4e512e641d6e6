package ingest

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// Forward reads hostile input: every line is either sent or counted as
// malformed, and exactly the good lines are posted.
func FuzzForward(f *testing.F) {
	f.Add([]byte("{\"time\":\"2025-11-01T00:00:00Z\"}\n{bad\n\n{\"time\":\"2025-11-01T00:00:01Z\"}"), "custos")
	f.Add([]byte(`{"time_iso8601":"2025-11-01T00:00:00+00:00","status":"200","request":"GET /x HTTP/1.1"}`), "nginx")
	f.Add([]byte(`{"start_time":"2025-11-01T00:00:00.000Z","response_code":401}`+"\r\n"), "envoy")
	f.Fuzz(func(t *testing.T, data []byte, format string) {
		if format != "custos" && format != "nginx" && format != "envoy" {
			return
		}
		posted := 0
		post := func(b []byte) (Stats, error) {
			n := bytes.Count(b, []byte("\n"))
			posted += n
			return Stats{Events: n}, nil
		}
		rep, err := Forward(context.Background(), bytes.NewReader(data), format, 3, post, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if posted != rep.Events || rep.Accepted != rep.Events || rep.Events+rep.Malformed > rep.Lines {
			t.Fatalf("posted %d, report %+v", posted, rep)
		}
	})
}
