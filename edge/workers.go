package edge

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// workers run per-connection work (the event-driven reader's turn on a readable socket, or a
// writer's batches): each piece goes to a waiting worker, or to a new one when none waits. A
// worker waits for more work for workerIdle before it exits, so under steady traffic a few
// workers, their stacks already grown by the read or write path, serve every connection, and
// an idle edge keeps none.
type workers struct {
	run   func(*Conn)
	tasks chan *Conn // unbuffered: a send succeeds only when a worker is waiting
	stop  chan struct{}
	wg    sync.WaitGroup
	count prometheus.Gauge // workers alive
}

const workerIdle = 10 * time.Second

func newWorkers(run func(*Conn), count prometheus.Gauge) *workers {
	return &workers{run: run, tasks: make(chan *Conn), stop: make(chan struct{}), count: count}
}

// submit runs c's work on a worker; it never blocks.
func (w *workers) submit(c *Conn) {
	select {
	case w.tasks <- c:
	default:
		w.wg.Add(1)
		w.count.Inc()
		go w.work(c)
	}
}

func (w *workers) work(c *Conn) {
	defer w.wg.Done()
	defer w.count.Dec()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		w.run(c)
		idle.Reset(workerIdle)
		select {
		case c = <-w.tasks:
		case <-idle.C:
			return
		case <-w.stop:
			return
		}
	}
}

// close lets waiting workers exit and waits for all of them; call it once no more work can
// be submitted.
func (w *workers) close() {
	close(w.stop)
	w.wg.Wait()
}
