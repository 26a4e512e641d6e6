package replicatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/custos-dev/custos/internal/proctest"
	"github.com/custos-dev/custos/internal/testenv"
	"github.com/custos-dev/custos/shop"
)

// The engines every test here needs, as this machine and CI run them.
const (
	pgBase    = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	redisAddr = "127.0.0.1:6379"
	redisDB   = 12
	natsAddr  = "127.0.0.1:4222"
	mariaAddr = "127.0.0.1:3306"
)

// engines are the addresses the processes use: the shared engines, or TCP
// proxies in front of them that a fault test cuts.
type engines struct {
	pg, redis, nats, maria string // host:port
}

// deployment is one scale-out deployment's private share of the engines (a
// PostgreSQL schema, a MariaDB database, NATS stream names) and its processes.
type deployment struct {
	t        testing.TB
	bin, dir string
	eng      engines
	schema   string
	auditDB  string
	prefix   string
	kekEnv   string
	kek      string
	issuer   string
	upstream string
	pop      shop.Population
	procs    map[string]*proc
	// keys is added to the keys section of every configuration (a custody
	// backend); env to every process's environment.
	keys string
	env  []string
	// detect is the detect section of every configuration, when set.
	detect string
	// rdb is the Redis database of the ledger (redisDB unless a test sets
	// another before it starts processes).
	rdb int
	// ledgerRedis, when set, is scale.redis instead of eng.redis and rdb
	// (a sharded ledger's list).
	ledgerRedis string
}

// requireEngines skips (or fails under CUSTOS_REQUIRE_SERVICES=1) when an
// engine is missing.
func requireEngines(t testing.TB) {
	t.Helper()
	db, err := sql.Open("pgx", pgBase)
	if err == nil {
		err = db.Ping()
		db.Close()
	}
	testenv.Require(t, "PostgreSQL at 127.0.0.1:5432", err)
	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr, DB: redisDB})
	err = rc.Ping(context.Background()).Err()
	rc.Close()
	testenv.Require(t, "Redis at "+redisAddr, err)
	nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
	}
	testenv.Require(t, "NATS JetStream at "+natsAddr, err)
	m, err := sql.Open("mysql", "root@tcp("+mariaAddr+")/")
	if err == nil {
		err = m.Ping()
		m.Close()
	}
	testenv.Require(t, "MariaDB at "+mariaAddr, err)
}

func newDeployment(t testing.TB, eng engines) *deployment {
	t.Helper()
	requireEngines(t)
	d := &deployment{t: t, bin: proctest.Binary(t), dir: t.TempDir(), eng: eng, procs: map[string]*proc{},
		issuer: "https://custos.test", pop: shop.Population{Members: 200, Missing: 10, Seed: 5}, rdb: redisDB}
	n := mrand.Uint32()
	d.schema = fmt.Sprintf("custos_ha_%d", n)
	d.auditDB = fmt.Sprintf("custos_ha_audit_%d", n)
	d.prefix = fmt.Sprintf("custos-ha-%d", n)
	d.kekEnv = fmt.Sprintf("CUSTOS_HA_KEK_%d", n)
	var k [32]byte
	rand.Read(k[:])
	d.kek = base64.StdEncoding.EncodeToString(k[:])

	pg, err := sql.Open("pgx", pgBase)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec("CREATE SCHEMA " + d.schema); err != nil {
		t.Fatal(err)
	}
	m, err := sql.Open("mysql", "root@tcp("+mariaAddr+")/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Exec("CREATE DATABASE " + d.auditDB); err != nil {
		t.Fatal(err)
	}
	sh, err := shop.New(d.pop)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(sh)
	d.upstream = up.URL
	t.Cleanup(func() {
		for _, p := range d.procs {
			p.stop()
		}
		up.Close()
		pg.Exec("DROP SCHEMA " + d.schema + " CASCADE")
		pg.Close()
		m.Exec("DROP DATABASE " + d.auditDB)
		m.Close()
		deleteStreams(d.prefix)
	})
	return d
}

func deleteStreams(prefix string) {
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up := strings.ToUpper(strings.ReplaceAll(prefix, "-", "_"))
	l := js.StreamNames(ctx)
	for n := range l.Name() {
		if strings.HasPrefix(n, up+"_") {
			js.DeleteStream(ctx, n)
		}
	}
}

// config writes the configuration file every process of the deployment
// shares; role-specific settings come on the command line.
func (d *deployment) config(name, gwExtra, scaleExtra string) string {
	var routes strings.Builder
	for _, r := range shop.Routes() {
		fmt.Fprintf(&routes, "    - pattern: %q\n      data_classes: [%s]\n      subject_param: %s\n",
			"GET "+r.Pattern, strings.Join(r.DataClasses, ", "), r.SubjectParam)
	}
	y := d.detect + fmt.Sprintf(`issuer: %s
decoys: [%q, %q]
keys:
  keyring: store
  kek_env: %s
%sscale:
  store: postgres://postgres@%s/test?sslmode=disable&search_path=%s
  redis: %s
  nats: nats://%s
  prefix: %s
  audit: mysql://root@%s/%s
%sgateway:
  routes:
%s%s`, d.issuer, decoys[0], decoys[1], d.kekEnv, d.keys, d.eng.pg, d.schema, d.redisURL(), d.eng.nats, d.prefix, d.eng.maria, d.auditDB, scaleExtra, routes.String(), gwExtra)
	p := filepath.Join(d.dir, name+".yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// redisURL is the deployment's scale.redis.
func (d *deployment) redisURL() string {
	if d.ledgerRedis != "" {
		return d.ledgerRedis
	}
	return fmt.Sprintf("redis://%s/%d", d.eng.redis, d.rdb)
}

// decoys are member IDs no customer has, in every process's configuration.
var decoys = [2]string{"900001", "900002"}

// proc is one custos process of the deployment.
type proc struct {
	t      testing.TB
	name   string
	role   string
	bin    string
	args   []string
	env    []string
	addr   string // the address whose readiness says it is up
	ready  string // the readiness URL
	log    *os.File
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	denv   []string // the deployment's environment
}

// twoAuthorities starts authorities a1 and a2, waits until both are ready,
// and registers client "login" (audience shop-api) at a1. It returns a1's
// admin credential and the client's secret.
func (d *deployment) twoAuthorities() (a1, a2 *proc, admin string, cl struct {
	Secret string `json:"client_secret"`
}) {
	d.t.Helper()
	a1 = d.authority("a1")
	a1.waitReady(30 * time.Second)
	admin = readToken(d.t, filepath.Join(d.dir, "a1", "admin-token"))
	if _, err := call("POST", a1.url()+"/v1/clients", admin, map[string]any{"name": "login", "audience": []string{"shop-api"}}, &cl); err != nil {
		d.t.Fatal(err)
	}
	a2 = d.authority("a2")
	a2.waitReady(30 * time.Second)
	return a1, a2, admin, cl
}

// authority starts an authority replica.
func (d *deployment) authority(name string) *proc {
	addr := proctest.FreeAddr(d.t)
	data := filepath.Join(d.dir, name)
	p := &proc{t: d.t, name: name, role: "authority", bin: d.bin, denv: d.env, addr: addr, ready: "http://" + addr + "/readyz",
		args: []string{"serve", "--role", "authority", "--config", d.config(name, "", ""), "--data", data, "--listen", addr},
		env:  []string{d.kekEnv + "=" + d.kek}}
	d.procs[name] = p
	p.start()
	return p
}

// gateway starts a standalone gateway following authorities (in order).
func (d *deployment) gateway(name, tokenFile string, authorities ...*proc) *proc {
	addr, admin := proctest.FreeAddr(d.t), proctest.FreeAddr(d.t)
	var urls []string
	for _, a := range authorities {
		urls = append(urls, a.url())
	}
	p := &proc{t: d.t, name: name, role: "gateway", bin: d.bin, denv: d.env, addr: addr, ready: "http://" + admin + "/readyz",
		args: []string{"gateway", "--config", d.config(name, "  name: "+name+"\n  trusted_proxies: [127.0.0.1/32]\n", ""), "--upstream", d.upstream, "--listen", addr,
			"--admin-listen", admin, "--authority", strings.Join(urls, ","), "--token-file", tokenFile}}
	d.procs[name] = p
	p.start()
	return p
}

// detector starts detector instance i of n.
func (d *deployment) detector(name string, i, n int) *proc {
	addr := proctest.FreeAddr(d.t)
	p := &proc{t: d.t, name: name, role: "detector", bin: d.bin, denv: d.env, addr: addr, ready: "http://" + addr + "/readyz",
		args: []string{"serve", "--role", "detector", "--config", d.config(name, "", fmt.Sprintf("  instance: %d\n  instances: %d\n", i, n)), "--data", filepath.Join(d.dir, name), "--listen", addr}}
	d.procs[name] = p
	p.start()
	return p
}

func (p *proc) url() string { return "http://" + p.addr }

func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log == nil {
		f, err := os.CreateTemp("", "custos-"+p.name+"-*.log")
		if err != nil {
			p.t.Fatal(err)
		}
		p.log = f
	}
	fmt.Fprintf(p.log, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(append(os.Environ(), p.env...), p.denv...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd = cmd
	exited := make(chan struct{})
	p.exited = exited
	go func() { cmd.Wait(); close(exited) }()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	fmt.Fprintf(p.log, "=== killed %s\n", time.Now().Format(time.RFC3339Nano))
}

func (p *proc) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// waitReady waits until the process's /readyz answers 200.
func (p *proc) waitReady(within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited before it was ready; log:\n%s", p.name, p.tail())
		default:
		}
		resp, err := http.Get(p.ready)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready within %s (last: %s); log:\n%s", p.name, within, last, p.tail())
}

// readyz returns the status and checks of /readyz.
func (p *proc) readyz() (int, map[string]string) {
	resp, err := http.Get(p.ready)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var m map[string]string
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log.Name())
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// client is an HTTP client with short timeouts for the script.
var client = &http.Client{Timeout: 5 * time.Second}

// call sends a JSON (or form) request with a bearer credential and decodes a
// JSON answer into out (when not nil). It returns the status.
func call(method, url, bearer string, body any, out any) (int, error) {
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = strings.NewReader(b), "application/x-www-form-urlencoded"
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("bad answer %q: %w", b, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return resp.StatusCode, nil
}

// access asks a gateway for member's profile with tok; it returns the status
// and the refusal reason.
func access(gw *proc, tok, member string) (int, string, error) {
	return accessFrom(gw, tok, member, "")
}

func readToken(t testing.TB, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// accessFrom is access with the request forwarded for src, when set (the
// gateways believe X-Forwarded-For from 127.0.0.1).
func accessFrom(gw *proc, tok, member, src string) (int, string, error) {
	req, _ := http.NewRequest("GET", gw.url()+"/api/members/"+member+"/profile", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if src != "" {
		req.Header.Set("X-Forwarded-For", src)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Desc string `json:"error_description"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Desc, nil
}

// access2 asks a gateway for path with no token.
func access2(gw *proc, path string) (int, string, error) {
	resp, err := client.Get(gw.url() + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Desc string `json:"error_description"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Desc, nil
}
