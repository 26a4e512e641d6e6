package server

import (
	"net/http"
	"path/filepath"

	"github.com/custos-dev/custos/console"
	"github.com/custos-dev/custos/ledger"
)

// mountConsole mounts the web console at /console, fed by detection's alerts,
// the gateway's access events and the ledger's issuance.
func (s *Server) mountConsole(mux *http.ServeMux) {
	cc := console.Config{
		Keys: s.Keys, Policy: s.Keys.Policy(), Staff: s.Staff, Credentials: s.Creds, Detect: s.Detect, Audit: s.Audit,
		CheckpointVerifier: s.checkpointVerifier,
		LiveTokens:         s.Ledger.Index().Len,
		EventsDir:          filepath.Join(s.Config.Data, EventsDir), FlushEvents: s.Forensics.Flush,
		Organization: s.Config.Issuer, Log: s.Log, Now: s.now, Store: s.DB, Proxies: s.apiProxies,
	}
	if s.Authority != nil {
		cc.IsDecoy = s.Authority.IsDecoy
	}
	if s.Gateway != nil {
		cc.Locate = s.Gateway.Locate
	}
	c, err := console.New(cc)
	if err != nil {
		s.Log.Error("console unavailable", "err", err)
		return
	}
	s.Console = c
	s.Detect.OnAlert(c.Alert)
	stopIssued := s.Ledger.Subscribe(func(r ledger.Record) { c.Issued(r) })
	sub := s.Bus.Subscribe(1<<12, false)
	go func() {
		for batch := range sub.C {
			for _, ev := range batch {
				c.Access(ev)
			}
		}
	}()
	s.closers = append(s.closers, func() error {
		sub.Close()
		stopIssued()
		return c.Close()
	})
	mux.Handle(console.Prefix+"/", c)
	mux.Handle(console.Prefix, c)
}
