package forensics

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TopSources is how many IPs, countries, ASNs and keys a scope lists (each
// with its distinct count).
const TopSources = 50

// Scope is the answer to "whose data did this incident expose": summary
// figures in its fields and the per-subject notification list behind
// [Scope.Each] and the exports. Close it to free the list.
type Scope struct {
	Indicators Indicators `json:"indicators"`
	// Files is the number of event files read; SkippedFiles the unreadable
	// ones left out under AllowPartial, in which case Partial is true.
	Files        int      `json:"files"`
	Partial      bool     `json:"partial"`
	SkippedFiles []string `json:"skipped_files,omitempty"`

	// Subjects is the number of affected data subjects: Members seen in
	// events plus NonMembers added by the Expander.
	Subjects   int64 `json:"subjects"`
	Members    int64 `json:"members"`
	NonMembers int64 `json:"non_members"`
	// Exposures counts allowed 2xx requests that returned personal data;
	// Attempts every other matching request (refused or failed).
	Exposures     int64        `json:"exposures"`
	Attempts      int64        `json:"attempts"`
	FirstExposure time.Time    `json:"first_exposure,omitzero"`
	LastExposure  time.Time    `json:"last_exposure,omitzero"`
	Classes       []ClassCount `json:"classes"`
	Routes        []RouteCount `json:"routes"`
	Sources       Sources      `json:"sources"`
	Keys          []Count      `json:"keys"`
	Reasons       []Count      `json:"reasons"`
	Hourly        []Bucket     `json:"hourly"`
	Daily         []Bucket     `json:"daily"`

	// Progress, when set, is called during exports with rows written so far.
	Progress func(done, total int) `json:"-"`

	s          *Store
	table      string
	classIndex map[string]int
	comboMask  map[string]uint64
	routes     []string
	routeBit   map[string]uint64
	// good, where and args repeat the scan when routes are too many for bits.
	good   []string
	where  string
	args   []any
	closed bool
	// fromTotals is how many files' key counts came from footer totals.
	fromTotals int
}

// ClassCount is how many data subjects had a data class exposed.
type ClassCount struct {
	Class    string `json:"class"`
	Subjects int64  `json:"subjects"`
}

// RouteCount is what one route exposed: requests, distinct subjects, attempts.
type RouteCount struct {
	Route     string `json:"route"`
	Exposures int64  `json:"exposures"`
	Subjects  int64  `json:"subjects"`
	Attempts  int64  `json:"attempts"`
}

// Count is a key (IP, country, ASN, key id, reason) with its request counts.
type Count struct {
	Key       string `json:"key"`
	Exposures int64  `json:"exposures"`
	Attempts  int64  `json:"attempts"`
}

// Sources are where the matching requests came from: the top entries and the
// number of distinct values.
type Sources struct {
	IPs               []Count `json:"ips"`
	DistinctIPs       int64   `json:"distinct_ips"`
	Countries         []Count `json:"countries"`
	DistinctCountries int64   `json:"distinct_countries"`
	ASNs              []Count `json:"asns"`
	DistinctASNs      int64   `json:"distinct_asns"`
}

// Bucket is one hour or day of the timeline.
type Bucket struct {
	Start     time.Time `json:"start"`
	Exposures int64     `json:"exposures"`
	Attempts  int64     `json:"attempts"`
}

// Exposure is one data subject on the notification list.
type Exposure struct {
	Subject     string    `json:"subject"`
	Member      bool      `json:"member"`
	DataClasses []string  `json:"data_classes"`
	First       time.Time `json:"first_exposure"`
	Last        time.Time `json:"last_exposure"`
}

// okExpr is true for a request that exposed a subject's data: allowed,
// answered 2xx, with a subject and data classes (the writer derives it).
const okExpr = `exposed`

// Scope reads the event files that may hold the incident and computes its
// scope. Indicators are validated before any file is read. progress, if not
// nil, is called with the number of files read so far and the total.
//
// A file that cannot be read fails the scope with an error naming it
// ([ErrBadFile]) unless the store allows partial answers.
func (s *Store) Scope(ctx context.Context, ind Indicators, progress func(done, total int)) (*Scope, error) {
	ind = cloneIndicators(ind)
	if err := ind.Validate(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if progress == nil {
		progress = func(int, int) {}
	}
	sc := &Scope{Indicators: ind, s: s, table: fmt.Sprintf("scope_%d", s.seq.Add(1))}
	ok := false
	defer func() {
		if !ok {
			sc.Close()
		}
	}()
	if err := s.scan(ctx, sc, progress); err != nil {
		return nil, err
	}
	if err := sc.finish(ctx); err != nil {
		return nil, err
	}
	ok = true
	return sc, nil
}

func cloneIndicators(ind Indicators) Indicators {
	ind.KeyIDs = slices.Clone(ind.KeyIDs)
	ind.JTIs = slices.Clone(ind.JTIs)
	ind.Reasons = slices.Clone(ind.Reasons)
	ind.RequestIDs = slices.Clone(ind.RequestIDs)
	ind.Sources = slices.Clone(ind.Sources)
	ind.ASNs = slices.Clone(ind.ASNs)
	ind.Countries = slices.Clone(ind.Countries)
	ind.Routes = slices.Clone(ind.Routes)
	ind.Subjects = slices.Clone(ind.Subjects)
	return ind
}

// scan selects the files, checks their footers, counts the matching events
// by the small keys (from footer totals where the indicators allow, else a
// batch of files at a time, which also finds unreadable files early), then
// aggregates every matching event per subject and per source.
func (s *Store) scan(ctx context.Context, sc *Scope, progress func(done, total int)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	hours, err := listHours(s.dir)
	if err != nil {
		return err
	}
	ind := &sc.Indicators
	var files []string
	// Footer totals of the files, when the indicators allow using them.
	foot := map[string][]totalRow{}
	useFooters := footerKeys(ind) && !s.opts.ignoreTotals
	for _, h := range hours {
		if !ind.From.IsZero() && !h.Hour.Add(time.Hour).After(ind.From) {
			continue
		}
		if !ind.To.IsZero() && !h.Hour.Before(ind.To) {
			continue
		}
		for _, p := range h.Parts {
			tot, err := checkFile(p.Path)
			if err != nil {
				if !s.opts.AllowPartial {
					return err
				}
				sc.SkippedFiles = append(sc.SkippedFiles, p.Path)
				continue
			}
			files = append(files, p.Path)
			if useFooters && tot != "" {
				// Totals that do not decode are ignored: the file is counted
				// from its rows instead.
				if rows, err := decodeTotals(tot); err == nil {
					foot[p.Path] = rows
				}
			}
		}
	}
	where, args, err := s.matchClause(ctx, sc)
	if err != nil {
		return err
	}
	total := len(files)
	sc.Files = total
	progress(0, total)
	// First pass: counts by all the small keys together, which have few
	// combinations. They come from the footer totals where the indicators
	// allow it, else from the rows, a batch of files at a time (for
	// progress, and to name an unreadable file). They also yield the
	// data-class sets and routes that exposed data, which the second pass
	// turns into bits.
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE `+sc.table+`_keys (route VARCHAR, country VARCHAR, asn UINTEGER,
		kid VARCHAR, reason VARCHAR, hr TIMESTAMP, cls VARCHAR, e BIGINT, a BIGINT, first TIMESTAMP, last TIMESTAMP)`); err != nil {
		return fmt.Errorf("failed to create scope table: %w", err)
	}
	var good, fromRows []string
	for _, f := range files {
		if _, ok := foot[f]; ok {
			good = append(good, f)
		} else {
			fromRows = append(fromRows, f)
		}
	}
	if err := s.footerKeys(ctx, sc, good, foot, where, args); err != nil {
		return err
	}
	sc.fromTotals = len(good)
	per := max(1, (len(fromRows)+19)/20)
	for done := 0; done < len(fromRows); {
		batch := fromRows[done:min(len(fromRows), done+per)]
		keys := func(fs []string) error {
			// A statement that fails inserts nothing, so counts stay exact.
			_, err := s.db.ExecContext(ctx, `INSERT INTO `+sc.table+`_keys `+sc.keysQuery(fs, where), args...)
			return err
		}
		if err := keys(batch); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, f := range batch {
				if err := keys([]string{f}); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if !s.opts.AllowPartial {
						return fmt.Errorf("%w %s: %v", ErrBadFile, f, err)
					}
					sc.SkippedFiles = append(sc.SkippedFiles, f)
					continue
				}
				good = append(good, f)
			}
		} else {
			good = append(good, batch...)
		}
		done += len(batch)
		// Files counted from rows move the bar over their share of it.
		progress(min(done, total-1), total)
	}
	if err := sc.readDictionaries(ctx); err != nil {
		return err
	}
	for {
		// The second pass moves the bar over the rest, a statement at a
		// time; it stops short of the end until the scope is complete.
		start := len(fromRows)
		step := func(i, n int) { progress(min(start+(total-start)*i/n, total-1), total) }
		err := s.aggregate(ctx, sc, good, where, args, step)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Damage the dictionary pass did not read: find the file at fault.
		var bad []string
		for _, f := range good {
			if err := s.aggregate(ctx, sc, []string{f}, where, args, func(int, int) {}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !s.opts.AllowPartial {
					return fmt.Errorf("%w %s: %v", ErrBadFile, f, err)
				}
				bad = append(bad, f)
			}
		}
		if len(bad) == 0 {
			return fmt.Errorf("failed to scope: %w", err)
		}
		sc.SkippedFiles = append(sc.SkippedFiles, bad...)
		good = slices.DeleteFunc(good, func(f string) bool { return slices.Contains(bad, f) })
		// The first pass counted the skipped files: count again without them.
		if _, err := s.db.ExecContext(ctx, `DELETE FROM `+sc.table+`_keys`); err != nil {
			return fmt.Errorf("failed to scope: %w", err)
		}
		var rest []string
		for _, f := range good {
			if _, ok := foot[f]; !ok {
				rest = append(rest, f)
			}
		}
		if err := s.footerKeys(ctx, sc, good, foot, where, args); err != nil {
			return err
		}
		if len(rest) > 0 {
			if _, err := s.db.ExecContext(ctx, `INSERT INTO `+sc.table+`_keys `+sc.keysQuery(rest, where), args...); err != nil {
				return fmt.Errorf("failed to scope: %w", err)
			}
		}
		if err := sc.readDictionaries(ctx); err != nil {
			return err
		}
	}
	sc.Files = len(good)
	sc.good, sc.where, sc.args = good, where, args
	progress(total, total)
	sc.Partial = len(sc.SkippedFiles) > 0
	return nil
}

// readDictionaries gives bits to the data-class sets and routes that exposed
// data, as counted by the first pass.
func (sc *Scope) readDictionaries(ctx context.Context) error {
	var combos, routes []string
	rows, err := sc.s.db.QueryContext(ctx, `SELECT DISTINCT cls, route FROM `+sc.table+`_keys WHERE e > 0`)
	if err != nil {
		return fmt.Errorf("failed to read data classes: %w", err)
	}
	if err := scanAll(rows, func(r *sql.Rows) error {
		var c, rt string
		err := r.Scan(&c, &rt)
		combos, routes = append(combos, c), append(routes, rt)
		return err
	}); err != nil {
		return fmt.Errorf("failed to read data classes: %w", err)
	}
	slices.Sort(combos)
	slices.Sort(routes)
	return sc.dictionaries(slices.Compact(combos), slices.Compact(routes))
}

// MaxDataClasses is how many distinct data classes one scope can tell apart
// (they are kept as bits per subject).
const MaxDataClasses = 63

// maxRouteBits is how many exposing routes are counted per subject with bits;
// beyond it routes' subjects are counted with a distinct count.
const maxRouteBits = 63

// classSep joins a request's data classes in the collected table.
const classSep = "\x1f"

// dictionaries gives each data class and each candidate exposing route a bit
// (routes only while there are at most maxRouteBits of them).
func (sc *Scope) dictionaries(combos, routes []string) error {
	sc.classIndex = map[string]int{}
	sc.comboMask = map[string]uint64{}
	for _, c := range combos {
		var m uint64
		for _, cl := range strings.Split(c, classSep) {
			b, err := sc.classBit(cl)
			if err != nil {
				return err
			}
			m |= 1 << b
		}
		sc.comboMask[c] = m
	}
	sc.routes = routes
	sc.routeBit = map[string]uint64{}
	if len(routes) <= maxRouteBits {
		for i, r := range routes {
			sc.routeBit[r] = 1 << i
		}
	}
	return nil
}

// classBit returns the bit of a data class, adding it to the dictionary.
func (sc *Scope) classBit(cl string) (int, error) {
	if b, ok := sc.classIndex[cl]; ok {
		return b, nil
	}
	if len(sc.classIndex) == MaxDataClasses {
		return 0, fmt.Errorf("failed to scope: more than %d distinct data classes", MaxDataClasses)
	}
	b := len(sc.classIndex)
	sc.classIndex[cl] = b
	return b, nil
}

// classNames lists the dictionary's classes by bit.
func (sc *Scope) classNames() []string {
	names := make([]string, len(sc.classIndex))
	for cl, b := range sc.classIndex {
		names[b] = cl
	}
	return names
}

// classesOf decodes a class mask, classes sorted by name.
func (sc *Scope) classesOf(mask uint64, names []string) []string {
	var out []string
	for b, cl := range names {
		if mask&(1<<b) != 0 {
			out = append(out, cl)
		}
	}
	slices.Sort(out)
	return out
}

func scanAll(rows *sql.Rows, fn func(*sql.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
