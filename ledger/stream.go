package ledger

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/custos-dev/custos/wire"
)

// The issuance stream, for gateways running as their own process
// (ledger/remote is the client):
//
//	GET  stream  → newline-delimited JSON, first the live set, then each change:
//	               {"h":"<64 hex>","exp":<unix>}            issued
//	               {"h":"<64 hex>","exp":<unix>,"r":true}   revoked
//	               {"hb":<unix>}                            heartbeat, after the snapshot and then periodically
//	POST lookup  ← {"hash":"<64 hex>"}
//	             → {"status":"live|revoked|unknown","exp":<unix>}
//
// Authentication of both endpoints belongs to the server that mounts them.

// Paths at which the authority's server mounts StreamHandler and
// LookupHandler; ledger/remote uses them under the authority URL.
const (
	StreamPath = "/v1/ledger/stream"
	LookupPath = "/v1/ledger/lookup"
)

// HeartbeatInterval is how often an idle stream carries a heartbeat line; a
// client that hears nothing for a few intervals treats its view as stale.
const HeartbeatInterval = 2 * time.Second

// freshCheck is how often a stream checks that its replica is still caught
// up with the other replicas.
const freshCheck = 50 * time.Millisecond

// streamBuffer is how many records a stream connection may fall behind before
// it is cut; the client reconnects and starts again from a fresh snapshot.
const streamBuffer = 1 << 16

// maxLookupBody bounds the lookup request body.
const maxLookupBody = 1 << 10

// ErrBadRequest marks a malformed lookup request.
var ErrBadRequest = errors.New("ledger: bad request")

// StreamHandler serves the issuance stream (GET).
func (l *Ledger) StreamHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			wire.WriteError(w, http.StatusMethodNotAllowed, "invalid_request", "GET only")
			return
		}
		fl, ok := w.(http.Flusher)
		if !ok {
			wire.WriteError(w, http.StatusInternalServerError, "server_error", "streaming unsupported")
			return
		}
		if !l.Fresh() {
			// Behind the other replicas: a follower would trust a view that
			// may miss their revocations. It asks another authority, or
			// looks hashes up here (confirmed with the shared backend).
			wire.WriteError(w, http.StatusServiceUnavailable, "ledger_unavailable", "this replica has not caught up with the other replicas")
			return
		}
		// Subscribe before the snapshot so nothing committed in between is lost;
		// a record seen twice is harmless (Add is idempotent, revocation sticky).
		ch := make(chan Record, streamBuffer)
		overflow := make(chan struct{})
		dropped := false
		cancel := l.Subscribe(func(rec Record) {
			if dropped {
				return
			}
			select {
			case ch <- rec:
			default:
				dropped = true
				close(overflow)
			}
		})
		defer cancel()

		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		bw := bufio.NewWriterSize(w, 64<<10)
		var line []byte
		ctx := r.Context()
		err := l.b.LoadLive(ctx, l.now().Add(-ExpiryGrace), func(e Entry) error {
			line = AppendRecordLine(line[:0], Record{Hash: e.Hash, Exp: e.ExpiresAt, Revoked: e.Revoked})
			_, err := bw.Write(line)
			return err
		})
		if err != nil {
			return // the client sees the stream end and reconnects
		}
		line = appendHeartbeat(line[:0], l.now())
		bw.Write(line)
		if bw.Flush() != nil {
			return
		}
		fl.Flush()

		tick := time.NewTicker(HeartbeatInterval)
		defer tick.Stop()
		// A replica that falls behind its peers ends its streams at once:
		// the followers stop trusting their copy and ask instead.
		var behind <-chan time.Time
		if l.peersFresh != nil && l.shared {
			ft := time.NewTicker(freshCheck)
			defer ft.Stop()
			behind = ft.C
		}
		for {
			select {
			case <-behind:
				if !l.Fresh() {
					return
				}
				continue
			case rec := <-ch:
				line = AppendRecordLine(line[:0], rec)
				bw.Write(line)
				// Drain what else is waiting, then flush once.
			drain:
				for {
					select {
					case rec := <-ch:
						line = AppendRecordLine(line[:0], rec)
						bw.Write(line)
					default:
						break drain
					}
				}
			case <-tick.C:
				line = appendHeartbeat(line[:0], l.now())
				bw.Write(line)
			case <-overflow:
				return
			case <-ctx.Done():
				return
			}
			if bw.Flush() != nil {
				return
			}
			fl.Flush()
		}
	})
}

// AppendRecordLine appends rec as one stream line, newline included.
func AppendRecordLine(b []byte, rec Record) []byte {
	b = append(b, `{"h":"`...)
	b = hex.AppendEncode(b, rec.Hash[:])
	b = append(b, `","exp":`...)
	b = strconv.AppendInt(b, unixCeil(rec.Exp), 10)
	if rec.Revoked {
		b = append(b, `,"r":true`...)
	}
	return append(b, "}\n"...)
}

func appendHeartbeat(b []byte, now time.Time) []byte {
	b = append(b, `{"hb":`...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	return append(b, "}\n"...)
}

func unixCeil(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// LookupResponse is the body of a lookup answer.
type LookupResponse struct {
	Status string `json:"status"`
	Exp    int64  `json:"exp"`
}

// LookupHandler answers a gateway's question about one hash it has not seen
// on the stream (POST).
func (l *Ledger) LookupHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			wire.WriteError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxLookupBody+1))
		if err != nil {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
			return
		}
		h, err := ParseLookupRequest(body)
		if err != nil {
			wire.WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		st, exp, err := l.lookup(r.Context(), h)
		if err != nil {
			wire.WriteError(w, http.StatusServiceUnavailable, "ledger_unavailable", "ledger unavailable")
			return
		}
		resp := LookupResponse{Status: st.String()}
		if st != Unknown {
			resp.Exp = exp.Unix()
		}
		wire.WriteJSON(w, http.StatusOK, resp)
	})
}

// ParseLookupRequest reads {"hash":"<64 hex>"}: one JSON object, no other
// fields, nothing after it, at most 1 KiB.
func ParseLookupRequest(body []byte) (Hash, error) {
	var h Hash
	if len(body) > maxLookupBody {
		return h, fmt.Errorf("%w: body too large", ErrBadRequest)
	}
	var req struct {
		Hash *string `json:"hash"`
	}
	if err := wire.Unmarshal(body, &req); err != nil {
		return h, fmt.Errorf("%w: body is not a lookup object: %v", ErrBadRequest, err)
	}
	if req.Hash == nil {
		return h, fmt.Errorf("%w: hash missing", ErrBadRequest)
	}
	return ParseHash(*req.Hash)
}

// ParseHash reads the 64-hex-digit form of a hash (either case).
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("%w: hash must be 64 hex digits", ErrBadRequest)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return Hash{}, fmt.Errorf("%w: hash must be 64 hex digits", ErrBadRequest)
	}
	return h, nil
}
