package forensics

// The SQL a scope runs: which rows match the indicators, and the passes
// that aggregate them.

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
