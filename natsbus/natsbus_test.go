package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
)

func localURL() string {
	if u := os.Getenv("CUSTOS_TEST_NATS"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

func requireNATS(t testing.TB, url string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
	}
	testenv.Require(t, "NATS JetStream at "+url, err)
}

func ev(i int, src string) event.Access {
	return event.Access{Time: time.Unix(1_750_000_000+int64(i), 0).UTC(), RequestID: fmt.Sprintf("req-%d", i),
		SrcIP: src, Route: "GET /api/members/{member}/addresses", Verdict: event.Allow, Subject: fmt.Sprint(i)}
}

func TestPartitionsAreConsistentAndExactlyOnce(t *testing.T) {
	for _, streams := range []int{1, 2} {
		t.Run(fmt.Sprintf("ok/access-streams=%d", streams), func(t *testing.T) { testPartitions(t, streams) })
	}
}

func testPartitions(t *testing.T, streams int) {
	url := localURL()
	requireNATS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("custos-test-%d", rand.Uint32())
	b, err := Open(ctx, Config{URL: url, Prefix: prefix, Partitions: 4, AccessStreams: streams})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range b.streams {
			b.js.DeleteStream(context.Background(), s)
		}
		b.Close()
	}()
	const n = 4000
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("203.0.%d.%d", i%50, i%200)
		if err := b.Publish(ctx, ev(i, src)); err != nil {
			t.Fatal(err)
		}
	}
	// A duplicate publish (same request id) is dropped by the server.
	if err := b.Publish(ctx, ev(7, "203.0.7.7")); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	owner := map[string]int{} // /24 → consumer instance
	cctx, ccancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for inst := 0; inst < 2; inst++ {
		wg.Add(1)
		go func(inst int) {
			defer wg.Done()
			b.Consume(cctx, "det", b.Partitions(inst, 2), func(e event.Access) error {
				mu.Lock()
				defer mu.Unlock()
				seen[e.RequestID]++
				net24 := e.SrcIP[:strings.LastIndexByte(e.SrcIP, '.')]
				if o, ok := owner[net24]; ok && o != inst {
					t.Errorf("source %s seen by instances %d and %d", net24, o, inst)
				}
				owner[net24] = inst
				return nil
			})
		}(inst)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumed %d of %d", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	ccancel()
	wg.Wait()
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s handled %d times", id, c)
		}
	}
}

func TestHandled(t *testing.T) {
	h := NewHandled(2)
	if !h.First("a") || h.First("a") || !h.First("b") || !h.First("c") || !h.First("a") {
		t.Fatal("Handled does not remember the last n ids")
	}
}

// cluster is three NATS servers (the nats-server module, each with its own
// JetStream store and cluster routes) on loopback in this process.
type cluster struct {
	srvs  []*server.Server
	ports []int
}

func freePort(t testing.TB) int { return proctest.FreePort(t) }

func startCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{}
	var cports []int
	for i := 0; i < 3; i++ {
		c.ports = append(c.ports, freePort(t))
		cports = append(cports, freePort(t))
	}
	for i := 0; i < 3; i++ {
		var routes []*url.URL
		for j := 0; j < 3; j++ {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", cports[j])})
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: c.ports[i],
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprint(i)),
			Cluster: server.ClusterOpts{Name: "custos", Host: "127.0.0.1", Port: cports[i]},
			Routes:  routes, NoLog: true, NoSigs: true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		c.srvs = append(c.srvs, s)
	}
	for _, s := range c.srvs {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats server not ready")
		}
	}
	t.Cleanup(func() {
		for _, s := range c.srvs {
			if s != nil {
				s.Shutdown()
			}
		}
	})
	return c
}

func (c *cluster) url() string {
	var u []string
	for _, p := range c.ports {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(u, ",")
}

func (c *cluster) kill(i int) {
	c.srvs[i].Shutdown()
	c.srvs[i] = nil
}

// streamLeader is the index of the server leading the stream.
func (c *cluster) streamLeader(ctx context.Context, t *testing.T, b *Bus, stream string) int {
	t.Helper()
	var name string
	err := retry(ctx, func(actx context.Context) error {
		s, err := b.js.Stream(actx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(actx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no leader yet")
		}
		name = info.Cluster.Leader
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range c.srvs {
		if s != nil && s.Name() == name {
			return i
		}
	}
	t.Fatalf("leader %q is not a running server", name)
	return -1
}

// The leader of the access stream in a three-node cluster dies while events
// flow, synchronously and asynchronously published: no acknowledged event is
// lost, none is handled twice, and no alert raised from them is duplicated.
func TestClusterNodeLoss(t *testing.T) {
	start := time.Now()
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	octx, ocancel := context.WithTimeout(ctx, 20*time.Second)
	b, err := Open(octx, Config{URL: c.url(), Partitions: 4, Replicas: 3, AckWait: 3 * time.Second})
	ocancel()
	if err != nil {
		t.Fatalf("cluster did not form: %v", err)
	}
	defer b.Close()
	b.OnError = func(err error) { t.Logf("bus: %v", err) }

	var mu sync.Mutex
	handled := map[string]int{}
	alerts := map[string]int{}
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		b.Consume(cctx, "det", b.Partitions(0, 1), func(e event.Access) error {
			// A detector raises an alert for every tenth event; a redelivered
			// event raises the same alert id, which the stream de-duplicates.
			if strings.HasSuffix(e.RequestID, "0") {
				if err := b.PublishAlert(cctx, "alert-"+e.RequestID, map[string]string{"request_id": e.RequestID}); err != nil {
					return err
				}
			}
			mu.Lock()
			handled[e.RequestID]++
			mu.Unlock()
			return nil
		})
	}()
	go func() {
		defer wg.Done()
		b.ConsumeAlerts(cctx, "notify", func(id string, _ json.RawMessage) error {
			mu.Lock()
			alerts[id]++
			mu.Unlock()
			return nil
		})
	}()

	acked := map[string]bool{}
	sync1 := func(from, to int) {
		for i := from; i < to; i++ {
			e := ev(i, fmt.Sprintf("198.51.%d.1", i%64))
			pctx, pc := context.WithTimeout(ctx, 10*time.Second)
			t0 := time.Now()
			err := b.PublishSync(pctx, e)
			pc()
			if d := time.Since(t0); d > time.Second {
				t.Logf("publish %d took %v", i, d)
			}
			if err == nil {
				acked[e.RequestID] = true
			} else {
				t.Logf("publish %d not acknowledged: %v", i, err)
			}
		}
	}
	sync1(0, 1000)
	leader := c.streamLeader(ctx, t, b, b.accessStream(0))
	for i := 1000; i < 3000; i++ {
		if i == 1500 {
			t.Logf("killing n%d, leader of the access stream", leader)
			c.kill(leader)
		}
		if err := b.Publish(ctx, ev(i, fmt.Sprintf("198.51.%d.1", i%64))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("published 3000 after %v", time.Since(start))
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("asynchronous publishes across the node loss: %v", err)
	}
	t.Logf("flushed after %v (%d publishes re-sent)", time.Since(start), b.resent.Load())
	for i := 1000; i < 3000; i++ {
		acked[fmt.Sprintf("req-%d", i)] = true
	}
	sync1(3000, 3500)
	if len(acked) < 3450 {
		t.Fatalf("only %d of 3500 publishes acknowledged with one node down", len(acked))
	}
	t.Logf("%d events acknowledged after %v", len(acked), time.Since(start))

	wantAlerts := 0
	for id := range acked {
		if strings.HasSuffix(id, "0") {
			wantAlerts++
		}
	}
	for {
		mu.Lock()
		missing := 0
		for id := range acked {
			if handled[id] == 0 {
				missing++
			}
		}
		gotAlerts := len(alerts)
		mu.Unlock()
		if missing == 0 && gotAlerts >= wantAlerts {
			break
		}
		if ctx.Err() != nil {
			mu.Lock()
			lo, hi := 1<<30, -1
			for id := range acked {
				if handled[id] == 0 {
					var k int
					fmt.Sscanf(id, "req-%d", &k)
					lo, hi = min(lo, k), max(hi, k)
				}
			}
			mu.Unlock()
			t.Fatalf("%d acknowledged events never delivered (indexes %d..%d, %d handled); %d of %d alerts",
				missing, lo, hi, len(handled), gotAlerts, wantAlerts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Wait past one AckWait so any pending redelivery would have arrived.
	time.Sleep(3500 * time.Millisecond)
	ccancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
	for id, n := range alerts {
		if n != 1 {
			t.Errorf("alert %s handled %d times", id, n)
		}
	}
	t.Logf("%d events, %d alerts, in %v", len(handled), len(alerts), time.Since(start))
}

// A consumer process that dies with deliveries it never acknowledged (killed
// in the middle of a batch) strands them until AckWait; its successor reads
// them back at start and handles them at once, each once, before newer ones.
func TestConsumerReclaimsUnacknowledgedDeliveries(t *testing.T) {
	url := localURL()
	requireNATS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("custos-test-%d", rand.Uint32())
	open := func() *Bus {
		b, err := Open(ctx, Config{URL: url, Prefix: prefix, Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dead := open()
	t.Cleanup(func() {
		for _, s := range dead.streams {
			dead.js.DeleteStream(context.Background(), s)
		}
	})
	const n = 50
	for i := 0; i < n; i++ {
		if err := dead.PublishSync(ctx, ev(i, "203.0.113.9")); err != nil {
			t.Fatal(err)
		}
	}
	// The first process handles 10 events, then hangs on the 11th and dies
	// with the rest of its batch delivered and unacknowledged.
	hang := make(chan struct{})
	defer close(hang)
	var mu sync.Mutex
	var first []string
	got10 := make(chan struct{})
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	go dead.Consume(dctx, "det", []int{0}, func(e event.Access) error {
		mu.Lock()
		if len(first) == 10 {
			mu.Unlock()
			close(got10)
			<-hang
			return errors.New("gone")
		}
		first = append(first, e.RequestID)
		mu.Unlock()
		return nil
	})
	select {
	case <-got10:
	case <-ctx.Done():
		t.Fatal("the first consumer handled fewer than 10 events")
	}
	time.Sleep(200 * time.Millisecond) // its acknowledgements reach the server
	dead.nc.Close()
	// Events published while no process consumes.
	next := open()
	defer next.Close()
	for i := n; i < n+10; i++ {
		if err := next.PublishSync(ctx, ev(i, "203.0.113.9")); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	seen := map[string]int{}
	start := time.Now()
	go next.Consume(ctx, "det", []int{0}, func(e event.Access) error {
		mu.Lock()
		order = append(order, e.RequestID)
		seen[e.RequestID]++
		mu.Unlock()
		return nil
	})
	// Well within AckWait (30 s): the stranded events come back at once.
	eventually(t, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)+len(first) >= n+10
	})
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range first {
		if seen[id] > 0 {
			t.Errorf("%s, acknowledged by the first process, handled again", id)
		}
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s handled %d times", id, c)
		}
	}
	for i, id := range order {
		if want := fmt.Sprintf("req-%d", 10+i); id != want {
			t.Fatalf("event %d handled is %s, want %s (the stranded ones first, in order)", i, id, want)
		}
	}
	if next.Reclaimed() == 0 {
		t.Error("nothing reclaimed")
	}
	t.Logf("the successor handled %d events (%d read back) in %s", len(order), next.Reclaimed(), took.Round(time.Millisecond))
}
