// Package examples holds working configurations of the proxies a shop
// already runs (nginx, Envoy, Traefik, Caddy) in front of custos's decision
// API; its tests run nginx and Caddy with them and validate Envoy's.
package examples
