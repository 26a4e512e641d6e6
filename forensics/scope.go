package forensics

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
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

// footerKeys adds the footer totals of those files that have them to the
// scope's key counts: loaded into a table named like the event columns, so
// the scope's WHERE clause selects the groups it would select events.
func (s *Store) footerKeys(ctx context.Context, sc *Scope, files []string, foot map[string][]totalRow, where string, args []any) error {
	var rows []totalRow
	for _, f := range files {
		rows = append(rows, foot[f]...)
	}
	if len(rows) == 0 {
		return nil
	}
	t := sc.table + "_totals"
	if _, err := s.db.ExecContext(ctx, `CREATE OR REPLACE TABLE `+t+` `+totalsColumns); err != nil {
		return fmt.Errorf("failed to load footer totals: %w", err)
	}
	for i := 0; i < len(rows); i += 1000 {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO `+t+` VALUES `+totalsValues(rows[i:min(len(rows), i+1000)])); err != nil {
			return fmt.Errorf("failed to load footer totals: %w", err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO `+sc.table+`_keys SELECT coalesce(route, ''), coalesce(country, ''),
		coalesce(asn, 0), coalesce(token_kid, ''), coalesce(reason, ''), time, coalesce(data_class_set, ''),
		CASE WHEN exposed THEN n ELSE 0 END, CASE WHEN exposed THEN 0 ELSE n END,
		CASE WHEN exposed THEN first END, CASE WHEN exposed THEN last END
		FROM `+t+` WHERE (`+where+`)`, args...); err != nil {
		return fmt.Errorf("failed to count footer totals: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DROP TABLE `+t); err != nil {
		return fmt.Errorf("failed to load footer totals: %w", err)
	}
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

func fileList(files []string) string {
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = sqlQuote(f)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// aggregate runs the scope's queries over files: the per-subject list, then
// the grouped counts. Each statement reads only the columns it needs; step
// is called after each with the number done and the number of statements.
func (s *Store) aggregate(ctx context.Context, sc *Scope, files []string, where string, args []any, step func(i, n int)) error {
	qs := sc.aggregateQueries(files, where)
	for i, q := range qs {
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		step(i+1, len(qs))
	}
	return nil
}

// keysQuery counts the matching events of files by the small keys, the
// data-class set and whether they exposed data. It groups the raw columns
// and coalesces the few groups afterwards.
func (sc *Scope) keysQuery(files []string, where string) string {
	return `SELECT coalesce(route, ''), coalesce(country, ''), coalesce(asn, 0), coalesce(token_kid, ''),
		coalesce(reason, ''), hr, coalesce(data_class_set, ''),
		CASE WHEN ok THEN n ELSE 0 END, CASE WHEN ok THEN 0 ELSE n END,
		CASE WHEN ok THEN first END, CASE WHEN ok THEN last END
	FROM (SELECT route, country, asn, token_kid, reason, date_trunc('hour', time) AS hr, data_class_set,
		coalesce(` + okExpr + `, false) AS ok, count(*) AS n, min(time) AS first, max(time) AS last
		FROM read_parquet(` + fileList(files) + `) WHERE (` + where + `) GROUP BY ALL)`
}

// aggregateQueries are the statements of [Store.aggregate].
func (sc *Scope) aggregateQueries(files []string, where string) []string {
	t := sc.table
	src := "read_parquet(" + fileList(files) + ")"
	if len(files) == 0 {
		src = "(" + emptyEvents + ")"
	}
	cm := sc.maskCase("data_class_set", sc.comboMask)
	rb := sc.maskCase("coalesce(route, '')", sc.routeBit)
	// Class and route bits share one aggregate when both fit in 32 bits.
	aggs, masks := `bit_or(`+cm+`) AS m, bit_or(`+rb+`) AS r`, `m AS cmask, r AS rmask`
	if len(sc.classIndex) <= 32 && len(sc.routeBit) <= 32 {
		aggs = `bit_or((` + cm + `) | ((` + rb + `) << 32)) AS m`
		masks = `m & 4294967295 AS cmask, m >> 32 AS rmask`
	}
	perSubject := func(key, cond string) string {
		return `SELECT ` + key + `, ` + aggs + `, min(time) AS first, max(time) AS last
		FROM ` + src + ` WHERE (` + where + `) AND ` + okExpr + ` AND ` + cond + ` GROUP BY ALL`
	}
	counts := `count(*) FILTER (WHERE ` + okExpr + `) AS e, count(*) FILTER (WHERE NOT coalesce(` + okExpr + `, false)) AS a`
	return []string{
		`CREATE OR REPLACE TABLE ` + t + `_notify AS SELECT sid, stext, true AS member, ` + masks + `, first, last FROM (
		` + perSubject(`subject_id AS sid, NULL::VARCHAR AS stext`, `subject_id IS NOT NULL`) + `
		UNION ALL
		` + perSubject(`NULL::UBIGINT AS sid, subject AS stext`, `subject_text`) + `)`,
		// IPv4 sources can number as many as requests: only their total is
		// kept; exposures and attempts are counted for the top ones after.
		`CREATE OR REPLACE TABLE ` + t + ` AS SELECT src_ip4 AS n, count(*) AS c
		FROM ` + src + ` WHERE (` + where + `) AND src_ip4 IS NOT NULL GROUP BY ALL`,
		// Sources that are not IPv4 are grouped by their text.
		`CREATE OR REPLACE TABLE ` + t + `_ip AS SELECT coalesce(src_ip, '') AS src_ip, ` + counts + `
		FROM ` + src + ` WHERE (` + where + `) AND src_ip4 IS NULL GROUP BY 1`,
	}
}

// maskCase maps a column's values to their bits with a MAP lookup over the
// dictionary (values not in it map to 0); DuckDB evaluates the lookup
// faster than a CASE over strings.
func (sc *Scope) maskCase(col string, dict map[string]uint64) string {
	var entries []string
	for _, k := range slices.Sorted(maps.Keys(dict)) {
		if dict[k] == 0 {
			continue
		}
		entries = append(entries, fmt.Sprintf("%s: %d::UBIGINT", sqlQuote(k), dict[k]))
	}
	if len(entries) == 0 {
		return "0::UBIGINT"
	}
	return "coalesce(MAP {" + strings.Join(entries, ", ") + "}[" + col + "], 0::UBIGINT)"
}

// inlineLimit is the most values an indicator list passes as parameters;
// longer lists are loaded into a table and joined.
const inlineLimit = 256

// matchClause renders the indicators as a WHERE clause: any selector, and
// every filter.
func (s *Store) matchClause(ctx context.Context, sc *Scope) (string, []any, error) {
	ind := &sc.Indicators
	var args []any
	nTables := 0
	in := func(col string, vals []string) (string, error) {
		if len(vals) <= inlineLimit {
			// Numbered placeholders: the clause order differs from the
			// order values are collected in.
			ph := make([]string, len(vals))
			for i, v := range vals {
				args = append(args, v)
				ph[i] = "$" + strconv.Itoa(len(args))
			}
			return col + " IN (" + strings.Join(ph, ", ") + ")", nil
		}
		nTables++
		t := fmt.Sprintf("%s_ind%d", sc.table, nTables)
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+t+" (v VARCHAR)"); err != nil {
			return "", fmt.Errorf("failed to load indicators: %w", err)
		}
		for i := 0; i < len(vals); i += 1000 {
			chunk := vals[i:min(len(vals), i+1000)]
			ph := strings.TrimSuffix(strings.Repeat("(?), ", len(chunk)), ", ")
			a := make([]any, len(chunk))
			for j, v := range chunk {
				a[j] = v
			}
			if _, err := s.db.ExecContext(ctx, "INSERT INTO "+t+" VALUES "+ph, a...); err != nil {
				return "", fmt.Errorf("failed to load indicators: %w", err)
			}
		}
		return col + " IN (SELECT v FROM " + t + ")", nil
	}
	var sel, filt []string
	add := func(dst *[]string, col string, vals []string) error {
		if len(vals) == 0 {
			return nil
		}
		c, err := in(col, vals)
		if err != nil {
			return err
		}
		*dst = append(*dst, c)
		return nil
	}
	reasons := make([]string, len(ind.Reasons))
	for i, r := range ind.Reasons {
		reasons[i] = string(r)
	}
	asns := make([]string, len(ind.ASNs))
	for i, a := range ind.ASNs {
		asns[i] = strconv.FormatUint(uint64(a), 10)
	}
	exact, ranges := splitSources(ind.Sources)
	for _, l := range []struct {
		col  string
		vals []string
	}{{"token_kid", ind.KeyIDs}, {"token_jti", ind.JTIs}, {"reason", reasons},
		{"request_id", ind.RequestIDs}, {"src_ip", exact}, {"CAST(asn AS VARCHAR)", asns},
		{"country", ind.Countries}} {
		if err := add(&sel, l.col, l.vals); err != nil {
			return "", nil, err
		}
	}
	if len(ranges) > 0 {
		c, err := s.rangeClause(ctx, sc, ranges)
		if err != nil {
			return "", nil, err
		}
		sel = append(sel, c)
	}
	if err := add(&filt, "route", ind.Routes); err != nil {
		return "", nil, err
	}
	if len(ind.Subjects) > 0 {
		var rs []string
		for _, r := range ind.Subjects {
			rs = append(rs, fmt.Sprintf("(TRY_CAST(subject AS UBIGINT) BETWEEN %d AND %d)", r.From, r.To))
		}
		filt = append(filt, "("+strings.Join(rs, " OR ")+")")
	}
	if !ind.From.IsZero() {
		filt = append(filt, "time >= "+tsLiteral(ind.From))
	}
	if !ind.To.IsZero() {
		filt = append(filt, "time < "+tsLiteral(ind.To))
	}
	if len(sel) > 0 {
		filt = append(filt, "("+strings.Join(sel, " OR ")+")")
	}
	return strings.Join(filt, " AND "), args, nil
}

func tsLiteral(t time.Time) string {
	return "TIMESTAMP '" + t.UTC().Format("2006-01-02 15:04:05.999999") + "'"
}

// splitSources splits validated sources into exact addresses (matched as
// text) and IPv4 prefixes as sorted, merged ranges of src_ip4.
func splitSources(srcs []string) (exact []string, ranges [][2]uint32) {
	for _, s := range srcs {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			exact = append(exact, s)
			continue
		}
		b := p.Masked().Addr().As4()
		lo := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		hi := lo | uint32(uint64(1)<<(32-p.Bits())-1)
		ranges = append(ranges, [2]uint32{lo, hi})
	}
	slices.SortFunc(ranges, func(a, b [2]uint32) int { return cmp.Compare(a[0], b[0]) })
	var merged [][2]uint32
	for _, r := range ranges {
		if n := len(merged); n > 0 && uint64(r[0]) <= uint64(merged[n-1][1])+1 {
			merged[n-1][1] = max(merged[n-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	return exact, merged
}

// rangeClause matches sources in IPv4 ranges by src_ip4, an integer compare
// that row-group statistics can skip. 0.0.0.0 has no src_ip4 and is matched
// by its text.
func (s *Store) rangeClause(ctx context.Context, sc *Scope, ranges [][2]uint32) (string, error) {
	var terms []string
	if ranges[0][0] == 0 {
		terms = append(terms, "src_ip = '0.0.0.0'")
	}
	if len(ranges) <= inlineLimit {
		for _, r := range ranges {
			terms = append(terms, fmt.Sprintf("src_ip4 BETWEEN %d AND %d", r[0], r[1]))
		}
		return "(" + strings.Join(terms, " OR ") + ")", nil
	}
	t := sc.table + "_ranges"
	if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+t+" (lo UINTEGER, hi UINTEGER)"); err != nil {
		return "", fmt.Errorf("failed to load indicators: %w", err)
	}
	for i := 0; i < len(ranges); i += 1000 {
		var vals []string
		for _, r := range ranges[i:min(len(ranges), i+1000)] {
			vals = append(vals, fmt.Sprintf("(%d, %d)", r[0], r[1]))
		}
		if _, err := s.db.ExecContext(ctx, "INSERT INTO "+t+" VALUES "+strings.Join(vals, ", ")); err != nil {
			return "", fmt.Errorf("failed to load indicators: %w", err)
		}
	}
	terms = append(terms, "EXISTS (SELECT 1 FROM "+t+" WHERE src_ip4 BETWEEN lo AND hi)")
	return "(" + strings.Join(terms, " OR ") + ")", nil
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

// finish turns the aggregated groups into the notification list (with the
// Expander's additions) and the summary figures.
func (sc *Scope) finish(ctx context.Context) error {
	db := sc.s.db
	t := sc.table
	routes := sc.routes
	routeBits := len(routes) <= maxRouteBits
	if sc.s.opts.Expander != nil {
		if err := sc.expand(ctx); err != nil {
			return err
		}
	}
	err := db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE member) FROM `+t+`_notify`).
		Scan(&sc.Subjects, &sc.Members)
	if err != nil {
		return fmt.Errorf("failed to count subjects: %w", err)
	}
	sc.NonMembers = sc.Subjects - sc.Members
	// Subjects per class (and per route, with bits), one pass.
	var sums []string
	for _, cl := range sc.classNames() {
		sums = append(sums, fmt.Sprintf("coalesce(sum(((cmask >> %d) & 1)::BIGINT), 0)", sc.classIndex[cl]))
	}
	if routeBits {
		for i := range routes {
			sums = append(sums, fmt.Sprintf("coalesce(sum(((rmask >> %d) & 1)::BIGINT) FILTER (WHERE member), 0)", i))
		}
	}
	perRouteSubjects := map[string]int64{}
	sc.Classes = []ClassCount{}
	if len(sums) > 0 {
		vals := make([]int64, len(sums))
		ptrs := make([]any, len(sums))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := db.QueryRowContext(ctx, `SELECT `+strings.Join(sums, ", ")+` FROM `+t+`_notify`).Scan(ptrs...); err != nil {
			return fmt.Errorf("failed to count data classes: %w", err)
		}
		names := sc.classNames()
		for i, cl := range names {
			if vals[i] > 0 {
				sc.Classes = append(sc.Classes, ClassCount{Class: cl, Subjects: vals[i]})
			}
		}
		slices.SortStableFunc(sc.Classes, func(a, b ClassCount) int { return int(b.Subjects - a.Subjects) })
		if routeBits {
			for i, r := range routes {
				perRouteSubjects[r] = vals[len(names)+i]
			}
		}
	}
	if !routeBits {
		rows, err := db.QueryContext(ctx, `SELECT route, count(DISTINCT subject) FROM (SELECT coalesce(route, '') AS route, subject
			FROM read_parquet(`+fileList(sc.good)+`) WHERE (`+sc.where+`) AND `+okExpr+`) GROUP BY route`, sc.args...)
		if err != nil {
			return fmt.Errorf("failed to count routes: %w", err)
		}
		if err := scanAll(rows, func(r *sql.Rows) error {
			var k string
			var n int64
			err := r.Scan(&k, &n)
			perRouteSubjects[k] = n
			return err
		}); err != nil {
			return fmt.Errorf("failed to count routes: %w", err)
		}
	}
	// Small keys: a few rows each.
	rows, err := db.QueryContext(ctx, `SELECT
		CASE WHEN GROUPING(route) = 0 THEN 'route' WHEN GROUPING(country) = 0 THEN 'country'
			WHEN GROUPING(asn) = 0 THEN 'asn' WHEN GROUPING(kid) = 0 THEN 'kid'
			WHEN GROUPING(reason) = 0 THEN 'reason' ELSE 'hour' END,
		CASE WHEN GROUPING(route) = 0 THEN route WHEN GROUPING(country) = 0 THEN country
			WHEN GROUPING(asn) = 0 THEN CAST(asn AS VARCHAR) WHEN GROUPING(kid) = 0 THEN kid
			WHEN GROUPING(reason) = 0 THEN reason ELSE strftime(hr, '%Y-%m-%dT%H') END,
		sum(e)::BIGINT, sum(a)::BIGINT, min(first), max(last)
		FROM `+t+`_keys GROUP BY GROUPING SETS ((route), (country), (asn), (kid), (reason), (hr))`)
	if err != nil {
		return fmt.Errorf("failed to summarise the scope: %w", err)
	}
	by := map[string][]Count{}
	sc.FirstExposure, sc.LastExposure = time.Time{}, time.Time{}
	if err := scanAll(rows, func(r *sql.Rows) error {
		var kind string
		var c Count
		var first, last sql.NullTime
		if err := r.Scan(&kind, &c.Key, &c.Exposures, &c.Attempts, &first, &last); err != nil {
			return err
		}
		by[kind] = append(by[kind], c)
		if kind == "route" {
			sc.Exposures += c.Exposures
			sc.Attempts += c.Attempts
			if first.Valid && (sc.FirstExposure.IsZero() || first.Time.Before(sc.FirstExposure)) {
				sc.FirstExposure = first.Time.UTC()
			}
			if last.Valid && last.Time.After(sc.LastExposure) {
				sc.LastExposure = last.Time.UTC()
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("failed to summarise the scope: %w", err)
	}
	byVolume := func(cs []Count, limit int) []Count {
		slices.SortFunc(cs, func(a, b Count) int {
			if d := (b.Exposures + b.Attempts) - (a.Exposures + a.Attempts); d != 0 {
				return int(d)
			}
			return strings.Compare(a.Key, b.Key)
		})
		if limit > 0 && len(cs) > limit {
			cs = cs[:limit]
		}
		return append([]Count{}, cs...)
	}
	sc.Routes = []RouteCount{}
	for _, c := range by["route"] {
		sc.Routes = append(sc.Routes, RouteCount{Route: c.Key, Exposures: c.Exposures, Subjects: perRouteSubjects[c.Key], Attempts: c.Attempts})
	}
	slices.SortFunc(sc.Routes, func(a, b RouteCount) int { return strings.Compare(a.Route, b.Route) })
	sc.Sources.DistinctCountries, sc.Sources.DistinctASNs = int64(len(by["country"])), int64(len(by["asn"]))
	sc.Sources.Countries = byVolume(by["country"], TopSources)
	sc.Sources.ASNs = byVolume(by["asn"], TopSources)
	sc.Keys = byVolume(by["kid"], TopSources)
	sc.Reasons = byVolume(by["reason"], 0)
	hours := by["hour"]
	slices.SortFunc(hours, func(a, b Count) int { return strings.Compare(a.Key, b.Key) })
	sc.Hourly, sc.Daily = []Bucket{}, []Bucket{}
	for _, h := range hours {
		start, err := time.Parse(hourLayout, h.Key)
		if err != nil {
			return fmt.Errorf("failed to read timeline: %w", err)
		}
		sc.Hourly = append(sc.Hourly, Bucket{Start: start, Exposures: h.Exposures, Attempts: h.Attempts})
		day := start.Truncate(24 * time.Hour)
		if n := len(sc.Daily); n > 0 && sc.Daily[n-1].Start.Equal(day) {
			sc.Daily[n-1].Exposures += h.Exposures
			sc.Daily[n-1].Attempts += h.Attempts
		} else {
			sc.Daily = append(sc.Daily, Bucket{Start: day, Exposures: h.Exposures, Attempts: h.Attempts})
		}
	}
	// Source addresses can number as many as requests: top ones and a count.
	if err := sc.topIPs(ctx); err != nil {
		return fmt.Errorf("failed to count sources: %w", err)
	}
	// The groups are no longer needed; free them now.
	for _, q := range []string{`DROP TABLE ` + t, `DROP TABLE ` + t + `_ip`, `DROP TABLE ` + t + `_keys`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("failed to free scope groups: %w", err)
		}
	}
	return nil
}

// topIPs fills the source addresses: the busiest TopSources, ties by address
// text, and the number of distinct ones. IPv4 groups are ordered by the text
// order of their octets through a rank table, so no address is formatted.
func (sc *Scope) topIPs(ctx context.Context) error {
	db := sc.s.db
	t := sc.table
	octets := make([]string, 256)
	for i := range octets {
		octets[i] = strconv.Itoa(i)
	}
	byText := slices.Clone(octets)
	slices.Sort(byText)
	rank := make([]string, 256)
	for r, o := range byText {
		i, _ := strconv.Atoi(o)
		rank[i] = strconv.Itoa(r)
	}
	rk := "[" + strings.Join(rank, ",") + "]"
	key := fmt.Sprintf("(%[1]s[(n >> 24) + 1]::UBIGINT << 24 | %[1]s[((n >> 16) & 255) + 1]::UBIGINT << 16 | %[1]s[((n >> 8) & 255) + 1]::UBIGINT << 8 | %[1]s[(n & 255) + 1]::UBIGINT)", rk)
	var n4, nt int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM `+t+`),
		(SELECT count(*) FROM `+t+`_ip)`).Scan(&n4, &nt); err != nil {
		return err
	}
	sc.Sources.DistinctIPs = n4 + nt
	var cand []Count
	add := func(q string) error {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		return scanAll(rows, func(r *sql.Rows) error {
			var c Count
			err := r.Scan(&c.Key, &c.Exposures, &c.Attempts)
			cand = append(cand, c)
			return err
		})
	}
	lim := strconv.Itoa(TopSources)
	// The busiest IPv4 sources by total (kept in Attempts until split), the
	// rank key only over those at or above the TopSources-th total.
	if err := add(`SELECT n, 0, c FROM ` + t + ` WHERE c >= (SELECT coalesce(min(c), 0) FROM (SELECT c FROM ` + t + ` ORDER BY c DESC LIMIT ` + lim + `))
		ORDER BY c DESC, ` + key + ` LIMIT ` + lim); err != nil {
		return err
	}
	v4 := map[string]uint32{}
	for i := range cand {
		v, _ := strconv.ParseUint(cand[i].Key, 10, 32)
		cand[i].Key = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
		v4[cand[i].Key] = uint32(v)
	}
	if err := add(`SELECT src_ip, e, a FROM ` + t + `_ip ORDER BY e + a DESC, src_ip LIMIT ` + lim); err != nil {
		return err
	}
	slices.SortFunc(cand, func(a, b Count) int {
		if d := (b.Exposures + b.Attempts) - (a.Exposures + a.Attempts); d != 0 {
			return int(d)
		}
		return strings.Compare(a.Key, b.Key)
	})
	top := append([]Count{}, cand[:min(len(cand), TopSources)]...)
	// Split the chosen IPv4 totals into exposures and attempts.
	var nums []string
	for _, c := range top {
		if n, ok := v4[c.Key]; ok {
			nums = append(nums, strconv.FormatUint(uint64(n), 10))
		}
	}
	if len(nums) > 0 && len(sc.good) > 0 {
		split := map[uint32][2]int64{}
		rows, err := db.QueryContext(ctx, `SELECT src_ip4, count(*) FILTER (WHERE `+okExpr+`), count(*) FILTER (WHERE NOT coalesce(`+okExpr+`, false))
			FROM read_parquet(`+fileList(sc.good)+`) WHERE (`+sc.where+`) AND src_ip4 IN (`+strings.Join(nums, ", ")+`) GROUP BY 1`, sc.args...)
		if err != nil {
			return err
		}
		if err := scanAll(rows, func(r *sql.Rows) error {
			var n uint32
			var ea [2]int64
			err := r.Scan(&n, &ea[0], &ea[1])
			split[n] = ea
			return err
		}); err != nil {
			return err
		}
		for i, c := range top {
			if n, ok := v4[c.Key]; ok {
				ea := split[n]
				if ea[0]+ea[1] != c.Attempts {
					return fmt.Errorf("source %s: %d requests counted, then %d", c.Key, c.Attempts, ea[0]+ea[1])
				}
				top[i].Exposures, top[i].Attempts = ea[0], ea[1]
			}
		}
	}
	sc.Sources.IPs = top
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

// expand asks the Expander about every exposed member and folds the related
// subjects into the notification list.
func (sc *Scope) expand(ctx context.Context) error {
	db := sc.s.db
	t := sc.table
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+t+`_rel (subject VARCHAR, cmask UBIGINT, first TIMESTAMP, last TIMESTAMP)`); err != nil {
		return fmt.Errorf("failed to expand subjects: %w", err)
	}
	var pending []any
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		ph := make([]string, 0, len(pending)/4)
		for i := 0; i < len(pending); i += 4 {
			ph = append(ph, fmt.Sprintf("($%d, $%d, $%d, $%d)", i+1, i+2, i+3, i+4))
		}
		_, err := db.ExecContext(ctx, "INSERT INTO "+t+"_rel VALUES "+strings.Join(ph, ", "), pending...)
		pending = pending[:0]
		return err
	}
	err := sc.Each(ctx, func(e Exposure) error {
		rel, err := sc.s.opts.Expander.Expand(ctx, e.Subject, e.DataClasses)
		if err != nil {
			return fmt.Errorf("failed to expand subject %s: %w", e.Subject, err)
		}
		for _, r := range rel {
			if r.Subject == "" || len(r.DataClasses) == 0 {
				continue
			}
			var m uint64
			for _, c := range r.DataClasses {
				b, err := sc.classBit(c)
				if err != nil {
					return err
				}
				m |= 1 << b
			}
			pending = append(pending, r.Subject, m, e.First, e.Last)
			if len(pending) >= 4*500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("failed to expand subjects: %w", err)
	}
	stmts := []string{
		`CREATE TABLE ` + t + `_all AS SELECT NULL::UBIGINT AS sid, subject AS stext, bool_or(member) AS member,
			bit_or(cmask) AS cmask, bit_or(rmask) AS rmask, min(first) AS first, max(last) AS last
		FROM (SELECT coalesce(stext, CAST(sid AS VARCHAR)) AS subject, member, cmask, rmask, first, last FROM ` + t + `_notify
			UNION ALL SELECT subject, false, cmask, 0::UBIGINT, first, last FROM ` + t + `_rel) GROUP BY subject`,
		`DROP TABLE ` + t + `_notify`,
		`ALTER TABLE ` + t + `_all RENAME TO ` + t + `_notify`,
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("failed to expand subjects: %w", err)
		}
	}
	return nil
}

// Each calls fn for every subject on the notification list, in subject order.
func (sc *Scope) Each(ctx context.Context, fn func(Exposure) error) error {
	if sc.closed {
		return ErrClosed
	}
	names := sc.classNames()
	rows, err := sc.s.db.QueryContext(ctx, `SELECT coalesce(stext, CAST(sid AS VARCHAR)) AS subject, member, cmask, first, last
		FROM `+sc.table+`_notify ORDER BY subject`)
	if err != nil {
		return fmt.Errorf("failed to read notification list: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e Exposure
		var mask uint64
		if err := rows.Scan(&e.Subject, &e.Member, &mask, &e.First, &e.Last); err != nil {
			return fmt.Errorf("failed to read notification list: %w", err)
		}
		e.First, e.Last = e.First.UTC(), e.Last.UTC()
		e.DataClasses = sc.classesOf(mask, names)
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Close drops the scope's tables.
func (sc *Scope) Close() error {
	if sc.closed {
		return nil
	}
	sc.closed = true
	var errs []error
	rows, err := sc.s.db.Query(`SELECT table_name FROM duckdb_tables() WHERE table_name LIKE ? ESCAPE '\'`,
		strings.ReplaceAll(sc.table, "_", `\_`)+`%`)
	if err != nil {
		return fmt.Errorf("failed to drop scope tables: %w", err)
	}
	var names []string
	errs = append(errs, scanAll(rows, func(r *sql.Rows) error {
		var n string
		if err := r.Scan(&n); err != nil {
			return err
		}
		if n == sc.table || strings.HasPrefix(n, sc.table+"_") {
			names = append(names, n)
		}
		return nil
	}))
	for _, n := range names {
		if _, err := sc.s.db.Exec("DROP TABLE IF EXISTS " + n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("failed to drop scope tables: %w", err)
	}
	return nil
}
