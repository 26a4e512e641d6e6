package provider_test

import (
	"testing"

	"github.com/custos-dev/custos/provider"
)

// BenchmarkCheck is the verdict on a recorded provider token, per
// algorithm: every call parses and verifies the signature (provider
// tokens are not in the verified-token cache) and looks up the ledger
// index. Run: go test -run XXX -bench Check ./provider
func BenchmarkCheck(b *testing.B) {
	f := newFixture(b, provider.Webhook)
	c := f.claims(nil)
	f.record(b, rec("jti-0123456789", c["exp"].(int64)))
	for _, kid := range []string{"ed", "ec", "rs"} {
		raw := f.idp.sign(b, kid, c)
		if r := f.check(raw); !r.Good() {
			b.Fatalf("%s: %+v", kid, r)
		}
		b.Run(kid, func(b *testing.B) {
			for b.Loop() {
				f.check(raw)
			}
		})
	}
}
