package server

import "net/http"

// MuxOf is the router of s, for the tests that compare it with the OpenAPI
// document.
func MuxOf(s *Server) *http.ServeMux { return s.mux }

// Permanent is permanent, for the test of which queued actions end failed
// at once.
var Permanent = permanent

// AddHold is addHold, for the test that a released hold is not placed
// again by a retry.
var AddHold = (*Server).addHold
