package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// WorkloadConfig is the clients' side of a run.
type WorkloadConfig struct {
	// Edges are the WebSocket URLs of the edges (ws://host:port/v1/ws); a user's two devices
	// connect to different edges when there are several.
	Edges []string
	// API is the REST API's base URL (http://host:port).
	API string
	// Secret is the HS256 secret the clients' tokens are minted with.
	Secret []byte
	// Prefix makes this run's user ids unique (the store keeps earlier runs' data).
	Prefix string
	// Users is the number of users (even, at least 4; default 8). Each has two devices, a
	// direct conversation with each neighbour on a ring, and three groups: its half of the
	// users, and everyone.
	Users int
	// Rate is the messages per second sent in total (default 60); MaxMessages bounds the run.
	Rate        float64
	MaxMessages int
	// LiveReadEvery is how often a random user reads the latest page of a conversation over
	// REST while faults run (default 1 s): what it sees is checked for divergence too.
	LiveReadEvery time.Duration
	// BackoffMin and BackoffMax are the SDK's reconnect backoff (default 100 ms, 3 s).
	BackoffMin, BackoffMax time.Duration
	// Seed makes the choice of sender, device and conversation reproducible.
	Seed   uint64
	Logger *slog.Logger
}

func (c *WorkloadConfig) defaults() {
	if c.Users == 0 {
		c.Users = 8
	}
	if c.Rate == 0 {
		c.Rate = 60
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = 100000
	}
	if c.LiveReadEvery == 0 {
		c.LiveReadEvery = time.Second
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first invalid setting.
func (c WorkloadConfig) Validate() error {
	switch {
	case len(c.Edges) == 0:
		return errors.New("workload: no edge")
	case c.API == "":
		return errors.New("workload: no API URL")
	case c.Users < 4 || c.Users%2 != 0:
		return fmt.Errorf("workload: %d users; want an even number, at least 4", c.Users)
	case c.Rate <= 0 || c.Rate > 1000:
		return fmt.Errorf("workload: rate %v out of range (0, 1000]", c.Rate)
	}
	return nil
}

// sendResendDelay is the SDK's delay before it resends an unanswered message (client.go's
// nextFrame): a send unanswered for longer has been resent with the same client_msg_id.
const sendResendDelay = 5 * time.Second

// presenceEvery is how often the workload samples its users' presence (REST, one request).
const presenceEvery = 500 * time.Millisecond

// device is one SDK client of a user.
type device struct {
	user, name string // name: "user/device"
	id         string // the device id
	edge       string
	store      *parley.MemoryStore // cursors and outbox survive the client (reconnects)
	convs      []string

	mu     sync.Mutex
	client *parley.Client
	state  parley.ConnState
	done   chan struct{} // closed when the client's event loop ends
}

// Workload is the clients of a run: it sets up users and conversations, sends, probes and
// reads back, recording everything.
type Workload struct {
	cfg  WorkloadConfig
	auth *auth.Authority
	rec  *recorder
	rng  *rand.Rand

	devices []*device
	byUser  map[string][]*device
	members map[string][]string // conversation -> member devices
	convs   map[string][]string // conversation -> member users
	users   []string            // the load's users (not the probes)

	probeConv      string
	probeA, probeB []*device
	probeN         int

	stop    chan struct{}
	wg      sync.WaitGroup
	liveErr int
}

// NewWorkload checks the configuration; Setup connects.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a, err := auth.New(auth.Config{HS256Secret: cfg.Secret}, nil)
	if err != nil {
		return nil, err
	}
	return &Workload{cfg: cfg, auth: a, rec: newRecorder(), rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)),
		byUser: map[string][]*device{}, members: map[string][]string{}, convs: map[string][]string{}, stop: make(chan struct{})}, nil
}

func (w *Workload) newDevice(user, id string, edge int) *device {
	d := &device{user: user, id: id, name: user + "/" + id, edge: w.cfg.Edges[edge%len(w.cfg.Edges)], store: parley.NewMemoryStore()}
	w.devices = append(w.devices, d)
	w.byUser[user] = append(w.byUser[user], d)
	return d
}

// Setup connects every device and creates the conversations through the REST API.
func (w *Workload) Setup(ctx context.Context) error {
	for i := range w.cfg.Users {
		u := w.cfg.Prefix + "u" + strconv.Itoa(i)
		w.users = append(w.users, u)
		w.newDevice(u, "d1", i)
		w.newDevice(u, "d2", i+1)
	}
	pa, pb := w.cfg.Prefix+"probe-a", w.cfg.Prefix+"probe-b"
	for e := range w.cfg.Edges {
		w.probeA = append(w.probeA, w.newDevice(pa, "e"+strconv.Itoa(e+1), e))
		w.probeB = append(w.probeB, w.newDevice(pb, "e"+strconv.Itoa(e+1), e))
	}
	for _, d := range w.devices {
		if err := w.dial(ctx, d); err != nil {
			return err
		}
	}
	create := func(owner string, users []string, f func(r *parley.REST) (parley.Conversation, error)) error {
		var c parley.Conversation
		err := retry(ctx, 30*time.Second, func() error {
			var err error
			c, err = f(w.byUser[owner][0].rest())
			return err
		})
		if err != nil {
			return fmt.Errorf("create conversation of %v: %w", users, err)
		}
		w.convs[c.ID] = users
		for _, u := range users {
			for _, d := range w.byUser[u] {
				d.convs = append(d.convs, c.ID)
				w.members[c.ID] = append(w.members[c.ID], d.name)
			}
		}
		return nil
	}
	n := len(w.users)
	for i := range n {
		a, b := w.users[i], w.users[(i+1)%n]
		if err := create(a, []string{a, b}, func(r *parley.REST) (parley.Conversation, error) { return r.CreateDirect(ctx, b) }); err != nil {
			return err
		}
	}
	for gi, g := range [][]string{w.users[:n/2], w.users[n/2:], w.users} {
		title := fmt.Sprintf("group %d", gi)
		if err := create(g[0], g, func(r *parley.REST) (parley.Conversation, error) { return r.CreateGroup(ctx, title, g[1:]...) }); err != nil {
			return err
		}
	}
	if err := create(pa, []string{pa, pb}, func(r *parley.REST) (parley.Conversation, error) { return r.CreateDirect(ctx, pb) }); err != nil {
		return err
	}
	w.probeConv = w.probeA[0].convs[0]
	return nil
}

func (d *device) rest() *parley.REST {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client.REST()
}

// dial connects d (again, with its store: the SDK resumes by sync and resends its outbox)
// and runs its event loop, which records what the SDK tells the app.
func (w *Workload) dial(ctx context.Context, d *device) error {
	tok, err := w.auth.Mint(chat.UserID(d.user), chat.DeviceID(d.id), 24*time.Hour)
	if err != nil {
		return err
	}
	var c *parley.Client
	err = retry(ctx, 60*time.Second, func() error {
		var err error
		c, err = parley.Dial(ctx, d.edge, parley.WithToken(parley.StaticToken(tok)), parley.WithStore(d.store),
			parley.WithAPIURL(w.cfg.API), parley.WithBackoff(w.cfg.BackoffMin, w.cfg.BackoffMax),
			parley.WithLogger(w.cfg.Logger.With("device", d.name)))
		return err
	})
	if err != nil {
		return fmt.Errorf("dial %s at %s: %w", d.name, d.edge, err)
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.client, d.done, d.state = c, done, parley.Connecting
	d.mu.Unlock()
	go func() {
		defer close(done)
		for ev := range c.Events() {
			now := time.Now()
			switch ev.Kind {
			case parley.EventMessage:
				w.rec.surfaced(d.name, ev.Message, now)
			case parley.EventAccepted:
				w.rec.settled(ev.ClientMsgID, SendAccepted, "", now)
			case parley.EventSendFailed:
				w.rec.settled(ev.ClientMsgID, SendRefused, fmt.Sprint(ev.Err), now)
			case parley.EventState:
				d.mu.Lock()
				d.state = ev.State
				d.mu.Unlock()
			}
		}
	}()
	return nil
}

// send makes one send from d to conv and records it.
func (w *Workload) send(ctx context.Context, d *device, conv string, n int) error {
	body := fmt.Sprintf("%s #%d", d.name, n)
	d.mu.Lock()
	c := d.client
	d.mu.Unlock()
	at := time.Now()
	id, err := c.Send(ctx, conv, body)
	if err != nil {
		return err
	}
	w.rec.sent(Send{Conversation: conv, Sender: d.user, Device: d.name, ClientMsgID: id, Body: body, Invoked: at, Outcome: SendUnknown})
	return nil
}

// Start runs the load (sends at Rate until Stop or MaxMessages) and the live REST reads.
func (w *Workload) Start(ctx context.Context) {
	var load []*device
	for _, u := range w.users {
		load = append(load, w.byUser[u]...)
	}
	w.wg.Add(4)
	go func() { // the sender
		defer w.wg.Done()
		t := time.NewTicker(time.Duration(float64(time.Second) / w.cfg.Rate))
		defer t.Stop()
		for n := 0; n < w.cfg.MaxMessages; n++ {
			select {
			case <-ctx.Done():
				return
			case <-w.stop:
				return
			case <-t.C:
			}
			d := load[w.rng.IntN(len(load))]
			conv := d.convs[w.rng.IntN(len(d.convs))]
			if err := w.send(ctx, d, conv, n); err != nil {
				w.cfg.Logger.Warn("send", "device", d.name, "err", err)
			}
		}
	}()
	// Stamps the sends the SDK has resent.
	go w.every(ctx, time.Second, func(now time.Time) { w.rec.markUnknown(now, sendResendDelay) })
	// Presence samples: every workload user has a device connected, so is online.
	go w.every(ctx, presenceEvery, func(now time.Time) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		states, err := load[0].rest().Presence(rctx, w.users...)
		cancel()
		s := PresenceSample{At: time.Now()}
		if err != nil {
			s.Err = err.Error()
		}
		for _, st := range states {
			switch st.State {
			case protocol.PresenceOnline:
				s.Online++
			case protocol.PresenceOffline:
				s.Offline++
			default:
				s.Unknown++
			}
		}
		w.rec.presence(s)
	})
	// Live REST reads.
	rng := rand.New(rand.NewPCG(w.cfg.Seed+1, 7))
	go w.every(ctx, w.cfg.LiveReadEvery, func(time.Time) {
		d := load[rng.IntN(len(load))]
		conv := d.convs[rng.IntN(len(d.convs))]
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msgs, err := d.rest().Messages(rctx, conv, 0, 50)
		cancel()
		if err != nil {
			w.liveErr++
			return
		}
		rd := Read{Source: "rest-live " + d.user, Conversation: conv, At: time.Now()}
		for _, m := range msgs {
			rd.Entries = append(rd.Entries, entryOfMessage(m, rd.At))
		}
		w.rec.read(rd)
	})
}

// every runs f at each tick of period until ctx ends or the load stops (one of w.wg's).
func (w *Workload) every(ctx context.Context, period time.Duration, f func(now time.Time)) {
	defer w.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// Stop ends the load and the live reads.
func (w *Workload) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.rec.markUnknown(time.Now(), sendResendDelay)
}

// Probe checks the deployment end to end: one message from probe-a on every edge must
// reach every device of both probe users (on every edge). It returns when they have, or
// with an error at timeout.
func (w *Workload) Probe(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ids []string
	for _, d := range w.probeA {
		w.probeN++
		d.mu.Lock()
		c := d.client
		d.mu.Unlock()
		body := fmt.Sprintf("%s probe #%d", d.name, w.probeN)
		at := time.Now()
		id, err := c.Send(ctx, w.probeConv, body)
		if err != nil {
			return err
		}
		w.rec.sent(Send{Conversation: w.probeConv, Sender: d.user, Device: d.name, ClientMsgID: id, Body: body, Invoked: at, Outcome: SendUnknown})
		ids = append(ids, id)
	}
	every := w.members[w.probeConv]
	for {
		if !slices.ContainsFunc(ids, func(id string) bool { return !w.rec.has(w.probeConv, id, every) }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe: not delivered to every probe device within %v", timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Load reports what happened in [from, to): sends invoked and accepted, and messages
// surfaced (so stored by the pipeline).
func (w *Workload) Load(from, to time.Time) (invoked, accepted, sequenced int) {
	return w.rec.load(from, to)
}

// Drain waits until every send has an outcome (the SDK resends the rest), or timeout.
func (w *Workload) Drain(ctx context.Context, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := w.rec.pending()
		if n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Reconnect closes every device's client and connects it again with its store, as an app
// restarting with its saved state would: the SDK syncs from its cursors and resends its
// outbox. It returns when every device has finished its first sync, or at timeout.
func (w *Workload) Reconnect(ctx context.Context, timeout time.Duration) error {
	for _, d := range w.devices {
		d.mu.Lock()
		c, done := d.client, d.done
		d.mu.Unlock()
		_ = c.Close()
		<-done
		if err := w.dial(ctx, d); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		waiting := 0
		for _, d := range w.devices {
			d.mu.Lock()
			if d.state != parley.Connected {
				waiting++
			}
			d.mu.Unlock()
		}
		if waiting == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reconnect: %d devices not connected after %v", waiting, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Quiesce waits until no device has surfaced anything for quiet, or timeout.
func (w *Workload) Quiesce(ctx context.Context, quiet, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Since(w.rec.lastSurfaced()) < quiet && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
	}
}

// Close closes every client.
func (w *Workload) Close() {
	for _, d := range w.devices {
		d.mu.Lock()
		c, done := d.client, d.done
		d.mu.Unlock()
		if c != nil {
			_ = c.Close()
			<-done
		}
	}
}

// History returns what was recorded so far.
func (w *Workload) History() History {
	h := w.rec.history(w.members)
	h.Probe = w.probeConv
	return h
}

// Conversations returns how many conversations the workload uses (the probe's included).
func (w *Workload) Conversations() int { return len(w.convs) }

// Devices returns how many devices the workload connects (the probes' included).
func (w *Workload) Devices() int { return len(w.devices) }

// LiveReadErrors counts the live REST reads that failed (expected while faults run).
func (w *Workload) LiveReadErrors() int { return w.liveErr }

// retry calls f until it succeeds or timeout passes, backing off from 200 ms to 2 s.
func retry(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	wait := 200 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
