package server

import "net/http"

// mountConsole mounts the web console (none yet).
func (s *Server) mountConsole(mux *http.ServeMux) {}
