package forensics

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/custos-dev/custos/event"
	"github.com/parquet-go/parquet-go"
)

// row is the Parquet layout of an access event: the contract fields as
// columns, token claims flattened, time as a UTC TIMESTAMP (not adjusted, so
// engines read a plain TIMESTAMP).
type row struct {
	Time        time.Time `parquet:"time,timestamp(microsecond:local)"`
	Gateway     string    `parquet:"gateway,dict"`
	RequestID   string    `parquet:"request_id"`
	Method      string    `parquet:"method,dict"`
	Route       string    `parquet:"route,dict"`
	Path        string    `parquet:"path"`
	Status      int32     `parquet:"status"`
	Bytes       int64     `parquet:"bytes"`
	LatencyUS   int64     `parquet:"latency_us"`
	SrcIP       string    `parquet:"src_ip"`
	Country     string    `parquet:"country,dict"`
	ASN         uint32    `parquet:"asn"`
	UserAgent   string    `parquet:"user_agent,dict"`
	TokenJTI    string    `parquet:"token_jti"`
	TokenKID    string    `parquet:"token_kid,dict"`
	TokenSub    string    `parquet:"token_sub"`
	TokenAud    string    `parquet:"token_aud,dict"`
	TokenIAT    int64     `parquet:"token_iat"`
	TokenEXP    int64     `parquet:"token_exp"`
	Verdict     string    `parquet:"verdict,dict"`
	Reason      string    `parquet:"reason,dict"`
	Subject     string    `parquet:"subject"`
	DataClasses []string  `parquet:"data_classes,list"`
	// ClassSet is data_classes joined by U+001F: derived, dictionary-encoded,
	// and far cheaper for an engine to scan than the list.
	ClassSet string `parquet:"data_class_set,dict"`
	// SubjectID is subject as a number when subject is the canonical decimal
	// form of one (no sign, no leading zero, not 0); NULL otherwise. Derived:
	// engines group integers far faster than text.
	SubjectID uint64 `parquet:"subject_id,optional"`
	// SubjectText is true when subject is set but subject_id is NULL: with
	// subject_id it tells a set subject without reading the text column.
	SubjectText bool `parquet:"subject_text"`
	// SrcIP4 is src_ip as a number when it is an IPv4 address other than
	// 0.0.0.0; NULL otherwise. Derived, like SubjectID.
	SrcIP4 uint32 `parquet:"src_ip4,optional"`
	// Exposed is true for a request that exposed a subject's data: allowed,
	// answered 2xx, with a subject and data classes. Derived: a scope tells
	// exposures from attempts by one column instead of five.
	Exposed bool `parquet:"exposed"`
}

// derive fills the derived columns from the contract fields.
func (r *row) derive() {
	r.ClassSet = strings.Join(r.DataClasses, classSep)
	r.SubjectID = subjectID(r.Subject)
	r.SubjectText = r.Subject != "" && r.SubjectID == 0
	r.Exposed = r.Verdict == string(event.Allow) && r.Status >= 200 && r.Status <= 299 &&
		r.Subject != "" && r.ClassSet != ""
	r.SrcIP4 = 0
	if a, err := netip.ParseAddr(r.SrcIP); err == nil && a.Is4() && a.String() == r.SrcIP {
		b := a.As4()
		r.SrcIP4 = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
}

// subjectID is s as a number if s is its canonical decimal form, else 0.
func subjectID(s string) uint64 {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return 0
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}

// requiredColumns are the columns a scope reads; a file without them is refused.
var requiredColumns = []string{"time", "route", "status", "src_ip", "country", "asn",
	"token_jti", "token_kid", "verdict", "reason", "subject", "data_class_set", "request_id",
	"subject_id", "subject_text", "src_ip4", "exposed"}

func toRow(ev *event.Access) row {
	r := row{
		Time: ev.Time.UTC(), Gateway: ev.Gateway, RequestID: ev.RequestID, Method: ev.Method,
		Route: ev.Route, Path: ev.Path, Status: int32(ev.Status), Bytes: ev.Bytes,
		LatencyUS: ev.LatencyUS, SrcIP: canonicalIP(ev.SrcIP), Country: ev.Country, ASN: ev.ASN,
		UserAgent: ev.UserAgent, TokenJTI: ev.Token.JTI, TokenKID: ev.Token.KID,
		TokenSub: ev.Token.Sub, TokenAud: ev.Token.Aud, TokenIAT: ev.Token.IAT,
		TokenEXP: ev.Token.EXP, Verdict: string(ev.Verdict), Reason: string(ev.Reason),
		Subject: ev.Subject, DataClasses: ev.DataClasses,
	}
	r.derive()
	return r
}

// canonicalIP stores addresses in one textual form (IPv4-mapped IPv6 unmapped,
// IPv6 per RFC 5952) so that indicators match by plain comparison.
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.Unmap().String()
}

const (
	eventsDir    = "events"
	hourPrefix   = "hour="
	hourLayout   = "2006-01-02T15"
	partPrefix   = "part-"
	partSuffix   = ".parquet"
	tempSuffix   = ".tmp"
	hiddenPrefix = "."
)

// hourDir is the partition directory of the hour starting at h.
func hourDir(dir string, h time.Time) string {
	return filepath.Join(dir, eventsDir, hourPrefix+h.UTC().Format(hourLayout))
}

// partFile is one sealed Parquet part.
type partFile struct {
	Hour time.Time
	Path string
	Size int64
}

// hourPartition is one hour directory and its sealed parts.
type hourPartition struct {
	Hour  time.Time
	Dir   string
	Parts []partFile
}

// listHours returns the hour partitions under dir in time order. Hidden names
// (temporary files, directories being compacted or deleted) are skipped.
func listHours(dir string) ([]hourPartition, error) {
	root := filepath.Join(dir, eventsDir)
	ents, err := os.ReadDir(root)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", root, err)
	}
	var hours []hourPartition
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, hourPrefix) {
			continue
		}
		h, err := time.Parse(hourLayout, strings.TrimPrefix(name, hourPrefix))
		if err != nil {
			continue
		}
		p := hourPartition{Hour: h, Dir: filepath.Join(root, name)}
		files, err := os.ReadDir(p.Dir)
		if err != nil {
			return nil, fmt.Errorf("failed to list %s: %w", p.Dir, err)
		}
		for _, f := range files {
			fn := f.Name()
			if f.IsDir() || strings.HasPrefix(fn, hiddenPrefix) || !strings.HasSuffix(fn, partSuffix) {
				continue
			}
			info, err := f.Info()
			if err != nil {
				return nil, fmt.Errorf("failed to stat %s: %w", fn, err)
			}
			p.Parts = append(p.Parts, partFile{Hour: h, Path: filepath.Join(p.Dir, fn), Size: info.Size()})
		}
		sort.Slice(p.Parts, func(i, j int) bool { return partNum(p.Parts[i].Path) < partNum(p.Parts[j].Path) })
		hours = append(hours, p)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Hour.Before(hours[j].Hour) })
	return hours, nil
}

// partNum is N of part-N.parquet, or -1.
func partNum(path string) int {
	b := filepath.Base(path)
	if !strings.HasPrefix(b, partPrefix) || !strings.HasSuffix(b, partSuffix) {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(b, partPrefix), partSuffix))
	if err != nil {
		return -1
	}
	return n
}

// checkFile reads a part's footer and checks it carries the event columns.
// It returns the footer totals, empty when the part has none.
func checkFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrBadFile, path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrBadFile, path, err)
	}
	pf, err := parquet.OpenFile(f, info.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrBadFile, path, err)
	}
	for _, c := range requiredColumns {
		if _, ok := pf.Schema().Lookup(c); !ok {
			if _, ok := pf.Schema().Lookup(c, "list", "element"); !ok {
				return "", fmt.Errorf("%w %s: column %q missing", ErrBadFile, path, c)
			}
		}
	}
	tot, _ := pf.Lookup(totalsKey)
	return tot, nil
}
