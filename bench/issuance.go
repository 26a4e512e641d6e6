package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-dev/custos/config"
)

// Issuance is what the issuance benchmark measured.
type Issuance struct {
	Client     string  `json:"client"` // the load generator's HTTP client
	Load       Load    `json:"load"`   // POST /v1/tokens, closed loop
	TokensPerS float64 `json:"tokens_per_s"`
	SignPerS   float64 `json:"sign_per_s"` // raw ed25519.Sign, one goroutine per core, same run
	SignProcs  int     `json:"sign_procs"` // goroutines signing
	Ratio      float64 `json:"ratio"`      // TokensPerS / SignPerS
	Target     float64 `json:"target"`     // tokens/s asked for
	Met        bool    `json:"met"`

	// CPU of the load phase (warm-up included) per token answered, split by
	// profiler labels into the server's part and the load generator's.
	CPU                CPUSplit      `json:"cpu"`
	ServerCPUPerToken  time.Duration `json:"server_cpu_per_token_ns"`
	GeneratorCPUPerTok time.Duration `json:"generator_cpu_per_token_ns"`
	// ServerCapacity is computed, not measured: the tokens/s the server's
	// CPU per token allows on all of this machine's cores, as if the
	// clients ran elsewhere.
	ServerCapacity float64 `json:"server_capacity_per_s"`
}

// IssuanceTarget is the issue's end-to-end issuance target on the 2-core machine.
const IssuanceTarget = 20000

// The issuance load generator's clients.
const (
	ClientLean    = "lean"     // rawConn: prebuilt requests, minimal answer parser
	ClientNetHTTP = "net/http" // the standard library's client
)

// RunIssuance starts a full server (sealed keyring, durable SQLite ledger),
// registers a client and drives POST /v1/tokens over loopback with
// Options.Concurrency keep-alive workers (default 256) for Options.Duration,
// then measures the raw Ed25519 signing rate on one goroutine per core over
// a token's signing input, as the ceiling.
func RunIssuance(ctx context.Context, o Options) (Issuance, error) {
	r, err := startServer(ctx, o.Dir, "", o.Redis)
	if err != nil {
		return Issuance{}, err
	}
	defer r.stop()
	_, secret, err := r.s.Creds.AddClient(ctx, "bench", []string{config.DefaultAudience}, "")
	if err != nil {
		return Issuance{}, fmt.Errorf("failed to register the client: %w", err)
	}
	first, err := issueHTTP(ctx, r.apiURL, secret, "m-0")
	if err != nil {
		return Issuance{}, err
	}
	url := r.apiURL + "/v1/tokens"
	auth := "Bearer " + secret
	next := func(w, seq int) (*http.Request, error) {
		body := `{"subject":"m-` + strconv.Itoa(w) + `-` + strconv.Itoa(seq) + `","audience":"` + config.DefaultAudience + `"}`
		req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}
	host := strings.TrimPrefix(r.apiURL, "http://")
	head := "POST /v1/tokens HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: " + auth +
		"\r\nContent-Type: application/json\r\nContent-Length: "
	rawNext := func(w, seq int, buf []byte) []byte {
		var body [96]byte
		b := append(body[:0], `{"subject":"m-`...)
		b = strconv.AppendInt(b, int64(w), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(seq), 10)
		b = append(b, `","audience":"`+config.DefaultAudience+`"}`...)
		buf = append(buf, head...)
		buf = strconv.AppendInt(buf, int64(len(b)), 10)
		buf = append(buf, "\r\n\r\n"...)
		return append(buf, b...)
	}
	workers := o.concurrency(256)
	client := o.Client
	if client == "" {
		client = ClientLean
	}
	var l Load
	split, err := measureSplit(o.CPUProfile, func() (err error) {
		switch client {
		case ClientLean:
			l, err = ClosedLoopRaw(ctx, host, workers, o.duration(), rawNext)
		case ClientNetHTTP:
			l, err = ClosedLoop(ctx, workers, o.duration(), next)
		default:
			err = fmt.Errorf("bench: unknown client %q (%s or %s)", client, ClientLean, ClientNetHTTP)
		}
		return err
	})
	if err != nil {
		return Issuance{Load: l}, fmt.Errorf("issuance load: %w", err)
	}
	procs := runtime.GOMAXPROCS(0)
	msg := []byte(first[:strings.LastIndexByte(first, '.')])
	sign := SignRate(ctx, procs, min(o.duration(), 3*time.Second), msg)
	out := Issuance{Client: client, Load: l, TokensPerS: l.PerSec, SignPerS: sign, SignProcs: procs, Target: IssuanceTarget, CPU: split}
	if n := l.Completed; n > 0 && split.Total > 0 {
		out.ServerCPUPerToken = split.Server / time.Duration(n)
		out.GeneratorCPUPerTok = split.Generator / time.Duration(n)
		out.ServerCapacity = float64(procs) * float64(time.Second) / float64(out.ServerCPUPerToken)
	}
	if sign > 0 {
		out.Ratio = l.PerSec / sign
	}
	out.Met = l.PerSec >= IssuanceTarget
	return out, nil
}

// issueHTTP asks the authority at api for one token.
func issueHTTP(ctx context.Context, api, secret, sub string) (string, error) {
	b, _ := json.Marshal(map[string]string{"subject": sub, "audience": config.DefaultAudience})
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/v1/tokens", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to issue a token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || strings.Count(out.AccessToken, ".") != 2 {
		return "", fmt.Errorf("failed to issue a token: status %d", resp.StatusCode)
	}
	return out.AccessToken, nil
}

// SignRate is raw ed25519.Sign of msg on procs goroutines for d, in signatures/s.
func SignRate(ctx context.Context, procs int, d time.Duration, msg []byte) float64 {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return 0
	}
	var n atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ed25519.Sign(priv, msg)
				n.Add(1)
			}
		}()
	}
	sleep(ctx, d)
	stop.Store(true)
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}
