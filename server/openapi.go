package server

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"gopkg.in/yaml.v3"
)

// openAPIYAML is the OpenAPI 3.1 description of every endpoint of the
// authority (kept as YAML for people to edit; served as JSON). A test checks
// that it and the router list the same operations.
//
//go:embed openapi.yaml
var openAPIYAML []byte

var openAPI = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return json.MarshalIndent(doc, "", "  ")
})

// OpenAPI is the OpenAPI 3.1 document served at GET /openapi.json.
func OpenAPI() ([]byte, error) { return openAPI() }

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	b, err := openAPI()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300")
	w.Write(b)
}
