package redis

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/ledger"
)

// BenchmarkPut measures what the jti and subject indexes cost a put: the
// indexed PutBatch against a baseline that writes the records alone, as
// PutBatch did before the indexes, in the same run on a redis-server of the
// benchmark's own. Each token has a subject of its own (one live token per
// account, the sizing case: the most index keys per token). Reported:
// puts/s (16 callers, on the same cores as the server), and from the
// server's INFO: commands per put, the server's own CPU per put
// (used_cpu_user + used_cpu_sys) and used_memory per token.
//
//	go test -run '^$' -bench BenchmarkPut -benchtime 100000x ./ledger/redis/
//
// The server keeps nothing on disk unless CUSTOS_BENCH_REDIS_AOF=1, which
// runs it with appendonly yes and appendfsync always.
func BenchmarkPut(b *testing.B) {
	var args []string
	if !aofBench() {
		args = []string{"--appendonly", "no"}
	}
	s := startServer(b, args...)
	be, err := Open(context.Background(), s.url())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	writers := map[string]func(context.Context, []ledger.Entry) error{
		"records-only": func(ctx context.Context, es []ledger.Entry) error { return putRecordsOnly(ctx, be.c, es) },
		"indexed":      be.PutBatch,
	}
	for _, batch := range []int{1, 64} {
		for _, name := range []string{"records-only", "indexed"} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) { benchPut(b, []*Backend{be}, writers[name], batch) })
		}
	}
}

// BenchmarkShardedPut measures what a second shard gives indexed puts: one
// Redis (Backend) against two (Sharded), each a redis-server of the
// benchmark's own, in the same run; server CPU, commands and memory are
// summed over the shards. Client and servers share the machine's cores.
//
//	go test -run '^$' -bench BenchmarkShardedPut -benchtime 100000x ./ledger/redis/
func BenchmarkShardedPut(b *testing.B) {
	var args []string
	if !aofBench() {
		args = []string{"--appendonly", "no"}
	}
	ctx := context.Background()
	one, err := Open(ctx, startServer(b, args...).url())
	if err != nil {
		b.Fatal(err)
	}
	defer one.Close()
	two, err := OpenSharded(ctx, []string{startServer(b, args...).url(), startServer(b, args...).url()})
	if err != nil {
		b.Fatal(err)
	}
	defer two.Close()
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("shards=1/batch=%d", batch), func(b *testing.B) { benchPut(b, []*Backend{one}, one.PutBatch, batch) })
		b.Run(fmt.Sprintf("shards=2/batch=%d", batch), func(b *testing.B) { benchPut(b, two.shards, two.PutBatch, batch) })
	}
}

func aofBench() bool { return strings.TrimSpace(os.Getenv("CUSTOS_BENCH_REDIS_AOF")) == "1" }

// benchPut runs write from 16 callers and reports puts/s and, summed over
// the servers of bes, commands, memory and server CPU per put.
func benchPut(b *testing.B, bes []*Backend, write func(context.Context, []ledger.Entry) error, batch int) {
	ctx := context.Background()
	for _, be := range bes {
		if err := be.c.FlushDB(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	mem0, cmds0, cpu0 := allStats(b, bes)
	shardCPU0 := make([]float64, len(bes))
	for i, be := range bes {
		_, _, shardCPU0[i] = serverStats(b, be.c)
	}
	exp := time.Now().Add(time.Hour)
	batches := (b.N + batch - 1) / batch
	work := make(chan []ledger.Entry, 64)
	go func() {
		for i := range batches {
			es := make([]ledger.Entry, batch)
			for j := range es {
				es[j] = entry(exp)
				es[j].Subject = strconv.Itoa(1_000_000 + i*batch + j)
			}
			work <- es
		}
		close(work)
	}()
	const callers = 16
	errs := make(chan error, callers)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		go func() {
			var err error
			for es := range work {
				if err == nil {
					err = write(ctx, es)
				}
			}
			errs <- err
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	b.StopTimer()
	puts := float64(batches * batch)
	var busiest float64 // CPU of the busiest server
	for i, be := range bes {
		_, _, c := serverStats(b, be.c)
		busiest = max(busiest, c-shardCPU0[i])
	}
	mem1, cmds1, cpu1 := allStats(b, bes)
	b.ReportMetric(puts/took.Seconds(), "puts/s")
	b.ReportMetric(float64(cmds1-cmds0-int64(4*len(bes)))/puts, "cmds/put") // less the INFO and FLUSHDB calls
	b.ReportMetric(float64(mem1-mem0)/puts, "B/token")
	b.ReportMetric((cpu1-cpu0)*1e6/puts, "server-µs/put")
	b.ReportMetric(busiest*1e6/puts, "busiest-server-µs/put")
}

// allStats is serverStats summed over the servers of bes.
func allStats(b *testing.B, bes []*Backend) (mem, cmds int64, cpu float64) {
	for _, be := range bes {
		m, c, u := serverStats(b, be.c)
		mem, cmds, cpu = mem+m, cmds+c, cpu+u
	}
	return mem, cmds, cpu
}

// serverStats reads used_memory, total_commands_processed and the CPU
// seconds the server has used from INFO.
func serverStats(b *testing.B, c *goredis.Client) (mem, cmds int64, cpu float64) {
	info, err := c.Info(context.Background(), "memory", "stats", "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "used_memory":
			mem = n
		case "total_commands_processed":
			cmds = n
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	return mem, cmds, cpu
}

// putRecordsOnly is PutBatch without the indexes (the baseline).
func putRecordsOnly(ctx context.Context, c *goredis.Client, entries []ledger.Entry) error {
	_, err := c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		for _, e := range entries {
			v, err := encode(e)
			if err != nil {
				return err
			}
			p.SetArgs(ctx, key(e.Hash), v, goredis.SetArgs{Mode: "NX", TTL: ttl(e.ExpiresAt)})
		}
		return nil
	})
	if err != nil && err != goredis.Nil {
		return err
	}
	return nil
}
