package sink

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// MaxExportLine bounds one line of an export's input.
const MaxExportLine = 1 << 20

// ErrRecord is wrapped by Export's errors about its input.
var ErrRecord = errors.New("not an access event or an alert")

// Export reads JSON lines of access events (an events file) or alerts (an
// alerts file, GET /v1/alerts items), telling them apart by their contract
// fields, and writes each in format f, one per line. It stops at the first
// line it cannot read, naming it, and returns how many it wrote.
func Export(r io.Reader, w io.Writer, f Format) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), MaxExportLine)
	bw := bufio.NewWriter(w)
	n, line := 0, 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		v, err := decodeRecord(b)
		if err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		out, err := f.Encode(v)
		if err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		bw.Write(out)
		if err := bw.WriteByte('\n'); err != nil {
			return n, err
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("line %d: %w", line+1, err)
	}
	return n, bw.Flush()
}

// decodeRecord decodes one line as an alert or an access event.
func decodeRecord(b []byte) (any, error) {
	var probe struct {
		Rule      *string         `json:"rule"`
		Incident  *string         `json:"incident_id"`
		RequestID *string         `json:"request_id"`
		Verdict   *event.Verdict  `json:"verdict"`
		Time      json.RawMessage `json:"time"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecord, err)
	}
	switch {
	case probe.Rule != nil && probe.Incident != nil:
		var a detect.Alert
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRecord, err)
		}
		return a, nil
	case probe.Verdict != nil && probe.Time != nil:
		var e event.Access
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRecord, err)
		}
		if e.Verdict != event.Allow && e.Verdict != event.Deny {
			return nil, fmt.Errorf("%w: verdict %q", ErrRecord, e.Verdict)
		}
		return e, nil
	}
	return nil, ErrRecord
}
