// Package forensics keeps access events in hourly Parquet partitions and answers,
// with DuckDB, whose data an incident exposed, when, how and from where.
//
// # Writing
//
// A [Writer] consumes [event.Access] values and writes them to
// DIR/events/hour=YYYY-MM-DDTHH/part-N.parquet with bounded memory. Parts appear
// atomically (written under a temporary name, then linked into place), so a
// reader never sees half a file. [Store.Compact] merges an hour's parts into one
// and [Store.Retain] deletes old hours unless an evidence hold covers them.
// Besides the contract fields, each part carries derived columns (numeric
// subject and IPv4 source, whether the request exposed data) and, in its
// footer, its events counted by the small keys (route, country, ASN, key id,
// reason, data classes, hour), so that a scope over those keys groups only
// the per-subject and per-source figures.
//
// # Scoping
//
// [Open] a [Store] over the same directory, parse [Indicators] (from flags with
// [ParseIndicators] or JSON with [ParseIndicatorsJSON]) and call [Store.Scope].
// The [Scope] answers how many data subjects were exposed, which data classes,
// per route, first and last exposure per subject, sources and a timeline, and
// exports the notification list ([Scope.WriteNotificationCSV],
// [Scope.WriteNotificationParquet]) and the regulator report ([Scope.Report]) with
// the legal deadline clocks ([Deadlines]).
//
// Only allowed requests answered 2xx on a route that carries data classes expose
// data; every other matching request is counted as an attempt.
package forensics

import "errors"

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrBadIndicator reports an indicator that does not parse or validate.
	ErrBadIndicator = errors.New("bad indicator")
	// ErrNoIndicators reports an indicator set that would select every event.
	ErrNoIndicators = errors.New("no indicators given")
	// ErrBadFile reports a Parquet file that cannot be read; the error names it.
	ErrBadFile = errors.New("unreadable event file")
	// ErrInvalidEvent reports an event the writer refuses (no time).
	ErrInvalidEvent = errors.New("invalid access event")
	// ErrClosed reports use of a closed writer, store or scope.
	ErrClosed = errors.New("closed")
	// ErrNotReadOnly reports an investigator query that is not a single read-only statement.
	ErrNotReadOnly = errors.New("query is not a single read-only statement")
)
