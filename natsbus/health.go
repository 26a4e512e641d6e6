package natsbus

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Ping reports whether the bus connection is up (for readiness checks).
func (b *Bus) Ping() error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("natsbus: connection %s", st)
	}
	return nil
}
