package delivery

import (
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
)

// Live fan-out: a sequenced message goes, already encoded, to every recipient's user subject.
// It is at-most-once; sync repairs what it misses.

// fanOut publishes the sequenced message on every recipient's user subject, the sender's
// included (their other devices). Best effort: failures are counted, sync repairs.
func (w *Worker) fanOut(m chat.Message, users []chat.UserID) {
	data, err := protocol.Encode(wire.MessageFrame(m))
	if err != nil {
		return
	}
	w.metrics.fanoutErrors.Add(float64(routing.Publish(w.nc, users, string(protocol.TypeMessage), data)))
	w.metrics.fanout.Add(float64(len(users)))
}
