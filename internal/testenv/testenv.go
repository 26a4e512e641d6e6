// Package testenv decides what a test does when a service it needs is missing:
// skip loudly, or fail when CUSTOS_REQUIRE_SERVICES=1 (as in CI).
package testenv

import (
	"os"
	"testing"
)

// Require skips t with a loud reason when err != nil, or fails it when the
// environment variable CUSTOS_REQUIRE_SERVICES is "1".
func Require(t testing.TB, service string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CUSTOS_REQUIRE_SERVICES") == "1" {
		t.Fatalf("REQUIRED SERVICE MISSING: %s: %v (CUSTOS_REQUIRE_SERVICES=1)", service, err)
	}
	t.Skipf("SKIPPED: service %s unavailable: %v (set CUSTOS_REQUIRE_SERVICES=1 to fail instead)", service, err)
}
