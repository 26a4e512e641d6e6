// Package wire owns custos's JSON contract over HTTP: the error body
// {"error","error_description"}, how JSON answers are written, and the one
// strict rule by which every JSON request body is read.
//
// # Answers
//
// [WriteJSON] writes an answer and [WriteError] the error body every endpoint
// shares; clients read the latter back with [ParseError]. Which HTTP status an
// error code carries is the caller's: the OAuth mapping lives in authority.
//
// # Request bodies
//
// [Decode] and [Unmarshal] read exactly one JSON value of bounded size into a
// Go value and refuse, with an error that says why and before anything is
// stored: invalid UTF-8, unknown fields, a field named in another letter case
// than its JSON name ({"Subject":…} for "subject"), trailing data, and
// duplicate object keys — also keys that differ only in letter case
// (compared with Unicode simple case folding, the folding encoding/json uses
// to match field names), at any depth. Go's decoder keeps the last of two
// duplicates and matches field names without regard to case, so
// {"subject":"1020","SUBJECT":"1021"} would otherwise be read as subject 1021
// while a case-sensitive reader in front of custos saw 1020. The checks are
// written here because the standard library's decoder (encoding/json/v2 is
// still an experiment) neither refuses duplicate keys nor matches names
// exactly, and none refuses duplicates across letter case.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxBody bounds a request body read by [Decode] (16 KiB).
const MaxBody = 16 << 10

// Error is the error body of every custos HTTP endpoint.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// WriteError writes the error body {"error": code, "error_description": desc}
// with status.
func WriteError(w http.ResponseWriter, status int, code, desc string) {
	WriteJSON(w, status, Error{Code: code, Description: desc})
}

// WriteJSON writes v as a JSON answer with status. Answers are never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ParseError reads an error body; ok is false when b is not one (not JSON,
// or no error code).
func ParseError(b []byte) (e Error, ok bool) {
	if json.Unmarshal(b, &e) != nil || e.Code == "" {
		return Error{}, false
	}
	return e, true
}

// Decode reads one JSON value of at most [MaxBody] bytes from r into v by the
// strict rule of [Unmarshal].
func Decode(r io.Reader, v any) error {
	return DecodeLimit(r, MaxBody, v)
}

// DecodeLimit is [Decode] with a bound of limit bytes.
func DecodeLimit(r io.Reader, limit int, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("failed to read body: %w", err)
	}
	if len(b) > limit {
		return fmt.Errorf("body larger than %d bytes", limit)
	}
	return Unmarshal(b, v)
}

// Unmarshal reads b, one JSON value, into v. It refuses unknown fields,
// trailing data, and duplicate object keys in any letter case at any depth.
// It does not bound the size of b; callers that read from a network do.
func Unmarshal(b []byte, v any) error {
	if err := CheckKeys(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("bad JSON body: trailing data")
	}
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer {
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return fmt.Errorf("bad JSON body: %v", err)
		}
		if err := checkNames(generic, t.Elem(), ""); err != nil {
			// v was filled; the caller must not use it, as with any error.
			return err
		}
	}
	return nil
}

// CheckKeys refuses b unless it is one JSON value, followed by nothing but
// white space, in which no object holds two keys equal under Unicode simple
// case folding. Decoders that do not decode into a Go struct (a generic
// map, a library that reads the body itself) call it first.
func CheckKeys(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("bad JSON body: not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []container
	started := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !started {
				return errors.New("bad JSON body: empty")
			}
			if len(stack) > 0 {
				return errors.New("bad JSON body: unexpected end")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("bad JSON body: %v", err)
		}
		if started && len(stack) == 0 {
			return errors.New("bad JSON body: trailing data")
		}
		started = true
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone(stack)
				continue
			}
			k := tok.(string)
			f := fold(k)
			if _, dup := stack[n-1].keys[f]; dup {
				return fmt.Errorf("bad JSON body: duplicate key %q", k)
			}
			stack[n-1].keys[f] = struct{}{}
			stack[n-1].wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, container{keys: map[string]struct{}{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, container{})
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		valueDone(stack)
	}
}

// container is one open object (keys holds its folded keys, wantKey says
// whether its next token is a key) or array (keys nil).
type container struct {
	keys    map[string]struct{}
	wantKey bool
}

// valueDone records that a whole value was read inside the innermost open
// container: in an object, a key comes next.
func valueDone(stack []container) {
	if n := len(stack); n > 0 && stack[n-1].keys != nil {
		stack[n-1].wantKey = true
	}
}

// fold maps s to one representative of its class under Unicode simple case
// folding, so that fold(a) == fold(b) exactly when strings.EqualFold(a, b).
func fold(s string) string {
	return strings.Map(foldRune, s)
}

func foldRune(r rune) rune {
	min := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < min {
			min = f
		}
	}
	return min
}
