package forensics

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestExp(t *testing.T) {
	dir := os.Getenv("CUSTOS_FORENSICS_BENCH_DIR")
	if dir == "" {
		t.Skip()
	}
	s, err := OpenWith(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := "token_kid = 'k-stolen'"
	for _, q := range []string{
		"SELECT count(*) FROM events WHERE " + w,
		"SELECT count(*) FROM (SELECT subject, route, min(time), max(time), count(*) FROM events WHERE " + w + " GROUP BY subject, route)",
		"SELECT count(*) FROM (SELECT subject, route, min(time), max(time), count(*), list(DISTINCT data_classes) FROM events WHERE " + w + " GROUP BY subject, route)",
		"SELECT count(*) FROM (SELECT subject, route, min(time), max(time), count(*), any_value(data_classes) FROM events WHERE " + w + " GROUP BY subject, route, data_classes)",
		"SELECT count(*) FROM (SELECT src_ip, count(*) FROM events WHERE " + w + " GROUP BY src_ip)",
		"SELECT count(*) FROM (SELECT date_trunc('hour', time), count(*) FROM events WHERE " + w + " GROUP BY 1)",
		"SELECT count(*) FROM (SELECT subject, route, src_ip, count(*) FROM events WHERE " + w + " GROUP BY GROUPING SETS ((subject, route), (src_ip)))",
	} {
		st := time.Now()
		_, rows, err := s.SQL(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%6.2fs %v %s", time.Since(st).Seconds(), rows[0][0], q[:min(len(q), 150)])
	}
}
