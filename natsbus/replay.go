package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/event"
)

// Replay hands fn, in stream order, the events of partitions stored since
// since that the durable consumers group-p<N> (see [Bus.Consume]) have
// already acknowledged, and returns how many it handed. A consumer whose
// state lives in memory (a detector's windows) calls it before Consume when
// it starts: Replay rebuilds what the acknowledged events built, Consume
// then delivers the rest, so no event counts twice and none is missed.
//
// The bound per partition is the consumer's acknowledgement floor: an
// event acknowledged out of order above it (one acknowledged while an
// earlier one awaited redelivery) is neither replayed nor redelivered.
// Replay reads every partition of each access stream (to keep the
// streams' order across partitions) and skips those not asked for.
func (b *Bus) Replay(ctx context.Context, group string, partitions []int, since time.Time, fn func(event.Access) error) (int, error) {
	floors := map[string]map[int]uint64{} // stream → partition → ack floor
	for _, p := range partitions {
		stream := b.accessStream(p)
		var floor uint64
		err := retry(ctx, func(actx context.Context) error {
			c, err := b.js.Consumer(actx, stream, fmt.Sprintf("%s-p%d", group, p))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				return nil // never consumed: nothing to rebuild
			}
			if err != nil {
				return err
			}
			floor = c.CachedInfo().AckFloor.Stream
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("failed to read the position of %s-p%d: %w", group, p, err)
		}
		if floor > 0 {
			if floors[stream] == nil {
				floors[stream] = map[int]uint64{}
			}
			floors[stream][p] = floor
		}
	}
	n := 0
	for stream, floor := range floors {
		m, err := b.replayStream(ctx, stream, floor, since, fn)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// replayStreamBatch is how many messages one fetch of a replay asks for.
const replayStreamBatch = 1024

func (b *Bus) replayStream(ctx context.Context, stream string, floor map[int]uint64, since time.Time, fn func(event.Access) error) (int, error) {
	var last uint64
	for _, f := range floor {
		last = max(last, f)
	}
	var c jetstream.Consumer
	err := retry(ctx, func(actx context.Context) error {
		var err error
		c, err = b.js.OrderedConsumer(actx, stream, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("failed to replay %s: %w", stream, err)
	}
	prefix := b.cfg.Prefix + ".access."
	n := 0
	for {
		batch, err := c.Fetch(replayStreamBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return n, fmt.Errorf("failed to replay %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			seq := md.Sequence.Stream
			if seq > last {
				return n, nil
			}
			p, err := strconv.Atoi(strings.TrimPrefix(m.Subject(), prefix))
			var ev event.Access
			if f, mine := floor[p]; err == nil && mine && seq <= f && json.Unmarshal(m.Data(), &ev) == nil {
				if err := fn(ev); err != nil {
					return n, err
				}
				n++
			}
			if md.NumPending == 0 {
				return n, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return n, fmt.Errorf("failed to replay %s: %w", stream, err)
		}
		if got == 0 {
			return n, nil // nothing stored since since
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
	}
}
