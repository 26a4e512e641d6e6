// Package examples holds working configurations of the proxies a shop
// already runs (nginx, Envoy, Traefik, Caddy) in front of custos's decision
// API; its tests run nginx and Caddy with them and validate Envoy's.
package examples

import _ "embed"

// Nginx is nginx/nginx.conf, for `custos bench decide` to run nginx with the
// configuration users are given. Its addresses are 127.0.0.1:8000 (nginx),
// 127.0.0.1:8080 (the API) and 127.0.0.1:7780 (custos).
//
//go:embed nginx/nginx.conf
var Nginx string
