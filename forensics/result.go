package forensics

// What a scope makes of the matching rows: totals, top sources, the
// notification list.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
