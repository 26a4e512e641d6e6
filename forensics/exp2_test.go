package forensics

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestExp2(t *testing.T) {
	dir := os.Getenv("CUSTOS_FORENSICS_BENCH_DIR")
	if dir == "" {
		t.Skip()
	}
	s, err := OpenWith(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ind, _ := ParseIndicators([]string{"kid:k-stolen"})
	sc := &Scope{Indicators: ind, s: s, table: "scope_x"}
	st := time.Now()
	if err := s.scan(context.Background(), sc, func(d, n int) { t.Logf("%d/%d %.2fs", d, n, time.Since(st).Seconds()) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("scan %.2fs", time.Since(st).Seconds())
	st = time.Now()
	if err := sc.finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("finish %.2fs", time.Since(st).Seconds())
}
