package sink

import (
	"encoding/json"
	"fmt"

	"github.com/custos-dev/custos/detect"
	"github.com/custos-dev/custos/event"
)

// Format is how a sink encodes what it sends: custos's own JSON (the
// contract field names) or OCSF 1.3 (alerts as Detection Finding, class
// 2004; access events as HTTP Activity, class 4002).
type Format string

const (
	Native Format = "native"
	OCSF   Format = "ocsf"
)

// ParseFormat reads a configured format; empty means native.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", Native:
		return Native, nil
	case OCSF:
		return OCSF, nil
	}
	return "", fmt.Errorf("format must be native or ocsf, got %q", s)
}

// Alert returns a in this format, ready for encoding/json.
func (f Format) Alert(a detect.Alert) any {
	if f == OCSF {
		return a.OCSF()
	}
	return a
}

// Event returns e in this format, ready for encoding/json.
func (f Format) Event(e event.Access) any {
	if f == OCSF {
		return e.OCSF()
	}
	return e
}

// Encode marshals an alert (detect.Alert) or an access event (event.Access)
// in this format.
func (f Format) Encode(v any) ([]byte, error) {
	switch x := v.(type) {
	case detect.Alert:
		v = f.Alert(x)
	case event.Access:
		v = f.Event(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("failed to encode: %w", err)
	}
	return b, nil
}

// EventSink is a sink that also takes access events.
type EventSink interface {
	SendEvent(e event.Access) error
}

// AttachEvents delivers every access event published on bus to s; delivery
// errors go to onErr. The subscription drops events (and counts them) rather
// than slow the gateway when s falls behind. It returns the subscription's
// Close.
func AttachEvents(bus *event.Bus, s EventSink, onErr func(error)) func() {
	sub := bus.Subscribe(1<<14, false)
	go func() {
		for batch := range sub.C {
			for _, ev := range batch {
				if err := s.SendEvent(ev); err != nil && onErr != nil {
					onErr(err)
				}
			}
		}
	}()
	return sub.Close
}
