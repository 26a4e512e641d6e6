package replicatest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/event"
	"github.com/custos-dev/custos/natsbus"
)

// A detector killed with SIGKILL loses no decoy alert: access events
// published while it is down, and just after, each raise their alert in
// PostgreSQL within a few seconds of its restart (well within the
// consumer's ack wait, after which the bus would redeliver anything it
// handed to the dead process).
func TestDetectorKillLosesNoAlert(t *testing.T) {
	d := newDeployment(t, direct)
	det := d.detector("d1", 0, 1)
	det.waitReady(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, err := natsbus.Open(ctx, natsbus.Config{URL: "nats://" + natsAddr, Prefix: d.prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	pg, err := sql.Open("pgx", pgBase+"&search_path="+d.schema)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	seq := 0
	publish := func() string {
		seq++
		jti := fmt.Sprintf("loss-%d-%d", seq, mrand.Uint32())
		ev := event.Access{Time: time.Now().UTC(), Gateway: "g-test", RequestID: jti, Method: "GET",
			Route: "GET /api/members/{id}/profile", Path: "/api/members/" + decoys[0] + "/profile", Status: 401,
			SrcIP: fmt.Sprintf("10.%d.1.7", 1+seq%16), Verdict: event.Deny, Reason: event.ReasonDecoySubject,
			Subject: decoys[0], Token: event.Token{JTI: jti, KID: "k1", Sub: "1001"}}
		if err := bus.PublishSync(ctx, ev); err != nil {
			t.Fatal(err)
		}
		return jti
	}
	alerted := func(jtis []string) []string {
		var missing []string
		for _, j := range jtis {
			var n int
			if err := pg.QueryRow(`SELECT count(*) FROM detect_alerts WHERE rule = 'decoy_subject' AND entity = $1`, "jti:"+j).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				missing = append(missing, j)
			}
		}
		return missing
	}
	waitAlerts := func(jtis []string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			m := alerted(jtis)
			if len(m) == 0 {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%d of %d decoy events have no alert %s after the detector restarted: %v", len(m), len(jtis), within, m)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for round := 0; round < 3; round++ {
		// The detector is busy with the stream: each event raises an alert.
		var live []string
		for i := 0; i < 20; i++ {
			live = append(live, publish())
			time.Sleep(5 * time.Millisecond)
		}
		waitAlerts(live, 10*time.Second)
		det.kill()
		var down []string
		for i := 0; i < 20; i++ {
			down = append(down, publish())
			time.Sleep(5 * time.Millisecond)
		}
		det.start()
		det.waitReady(30 * time.Second)
		took := waitAlerts(append(live, down...), 10*time.Second)
		t.Logf("round %d: %d events published while the detector was down alerted %s after its restart", round, len(down), took.Round(time.Millisecond))
	}
}

// A gateway killed with SIGKILL right after it refused requests has lost
// none of their access events: each refusal was answered only once its
// event was stored in JetStream.
func TestGatewayKillLosesNoRefusalEvent(t *testing.T) {
	d := newDeployment(t, direct)
	a := d.authority("a1")
	a.waitReady(30 * time.Second)
	tf := filepath.Join(d.dir, "a1", "admin-token")
	admin := readToken(t, tf)
	var cl struct {
		Secret string `json:"client_secret"`
	}
	if _, err := call("POST", a.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		t.Fatal(err)
	}
	g := d.gateway("g1", tf, a)
	g.waitReady(30 * time.Second)
	var want []string // jtis of refused decoy requests
	for round := 0; round < 4; round++ {
		var toks []string
		for i := 0; i < 8; i++ {
			var out struct {
				AccessToken string `json:"access_token"`
			}
			if _, err := call("POST", a.url()+"/v1/tokens", cl.Secret, map[string]any{"subject": fmt.Sprint(d.pop.MemberID(1)), "audience": "shop-api"}, &out); err != nil {
				t.Fatal(err)
			}
			toks = append(toks, out.AccessToken)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i, tok := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, reason, err := accessFrom(g, tok, decoys[i%2], fmt.Sprintf("10.%d.1.7", 1+i))
				if err != nil || st != 401 || reason != "decoy_subject" {
					t.Errorf("decoy request: %d %q %v", st, reason, err)
					return
				}
				mu.Lock()
				want = append(want, tokenJTI(tok))
				mu.Unlock()
			}()
		}
		wg.Wait()
		g.kill() // the moment the last refusal is answered
		g.start()
		g.waitReady(30 * time.Second)
	}
	stored := accessEvents(t, d)
	for _, j := range want {
		if !slices.ContainsFunc(stored, func(ev event.Access) bool { return ev.Token.JTI == j && ev.Reason == event.ReasonDecoySubject }) {
			t.Errorf("the refusal of token %s was answered, and its event is not in the stream", j)
		}
	}
	t.Logf("%d refusals answered right before a kill -9, %d events in the stream", len(want), len(stored))
}

// accessEvents reads every access event of the deployment's stream.
func accessEvents(t *testing.T, d *deployment) []event.Access {
	t.Helper()
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := strings.ToUpper(strings.ReplaceAll(d.prefix, "-", "_")) + "_ACCESS"
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	total := st.CachedInfo().State.Msgs
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Access
	for uint64(len(out)) < total {
		batch, err := c.Fetch(1024, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev event.Access
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			t.Fatalf("read %d of the stream's %d events", len(out), total)
		}
	}
	return out
}
