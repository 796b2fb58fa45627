package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// FinalReads reads every conversation back from seq 1, once every fault has healed: each
// member through sync (on a connection of its own, with raw protocol frames, so nothing
// the SDK does can hide what the server returned) and through the REST history API.
func (w *Workload) FinalReads(ctx context.Context) error {
	var errs []error
	users := slices.Sorted(func(yield func(string) bool) {
		for u := range w.byUser {
			if !yield(u) {
				return
			}
		}
	})
	for _, u := range users {
		convs := w.byUser[u][0].convs
		reads, err := w.syncRead(ctx, u, convs)
		if err != nil {
			errs = append(errs, fmt.Errorf("sync read of %s: %w", u, err))
		}
		for _, rd := range reads {
			w.rec.read(rd)
		}
		for _, conv := range convs {
			rd, err := w.restRead(ctx, w.byUser[u][0], conv)
			if err != nil {
				errs = append(errs, fmt.Errorf("REST read of %s by %s: %w", conv, u, err))
				continue
			}
			w.rec.read(rd)
		}
	}
	return errors.Join(errs...)
}

// restRead pages through a conversation from seq 1 with the history API, retrying what the
// API says is retryable.
func (w *Workload) restRead(ctx context.Context, d *device, conv string) (Read, error) {
	rd := Read{Source: "rest " + d.user, Conversation: conv, Final: true, At: time.Now()}
	var after int64
	for {
		var page []protocol.Message
		err := retry(ctx, 60*time.Second, func() error {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var err error
			page, err = d.rest().MessagesAfter(rctx, conv, after, 200)
			if ae, ok := errors.AsType[*parley.APIError](err); ok && ae.RetryAfter > 0 {
				time.Sleep(ae.RetryAfter)
			}
			return err
		})
		if err != nil {
			return rd, err
		}
		if len(page) == 0 {
			return rd, nil
		}
		for _, m := range page {
			rd.Entries = append(rd.Entries, entryOfMessage(m, rd.At))
			after = max(after, m.Seq)
		}
	}
}

// syncRead connects as a new device of user and syncs with a cursor of 0 for each of convs
// until the server has nothing more, returning one read per conversation.
func (w *Workload) syncRead(ctx context.Context, user string, convs []string) ([]Read, error) {
	tok, err := w.auth.Mint(chat.UserID(user), "final-sync", time.Hour)
	if err != nil {
		return nil, err
	}
	var ws *websocket.Conn
	err = retry(ctx, 60*time.Second, func() error {
		dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 10 * time.Second}
		var err error
		ws, _, err = dialer.DialContext(ctx, w.cfg.Edges[0], http.Header{"Authorization": {"Bearer " + tok}})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer ws.Close()
	at := time.Now()
	reads := map[string]*Read{}
	cursors := map[string]int64{}
	for _, c := range convs {
		reads[c] = &Read{Source: "sync " + user, Conversation: c, Final: true, At: at}
		cursors[c] = 0
	}
	since := ""
	for page := 0; ; page++ {
		if page > 10000 {
			return nil, errors.New("sync did not end")
		}
		req := protocol.Frame{Type: protocol.TypeSync, ID: "final-" + strconv.Itoa(page), Since: since, Limit: 500}
		for _, c := range convs {
			req.Cursors = append(req.Cursors, protocol.Cursor{Conversation: c, Seq: cursors[c]})
		}
		res, err := syncPage(ctx, ws, req)
		if err != nil {
			return nil, err
		}
		for _, m := range res.Messages {
			rd := reads[m.Conversation]
			if rd == nil { // a conversation the workload did not make: keep it, the checker judges it
				rd = &Read{Source: "sync " + user, Conversation: m.Conversation, Final: true, At: at}
				reads[m.Conversation] = rd
				convs = append(convs, m.Conversation)
			}
			rd.Entries = append(rd.Entries, entryOfMessage(m, at))
			cursors[m.Conversation] = max(cursors[m.Conversation], m.Seq)
		}
		if !res.More {
			break
		}
		since = res.Since
	}
	var out []Read
	for _, c := range convs {
		out = append(out, *reads[c])
	}
	return out, nil
}

// syncPage requests one page, within the edge's frame rate (a long run has hundreds of
// pages: at most 10 requests a second, and a retryable refusal such as rate_limited is
// waited out and the page asked again).
func syncPage(ctx context.Context, ws *websocket.Conn, req protocol.Frame) (protocol.Frame, error) {
	for attempt := 1; ; attempt++ {
		sleep(ctx, 100*time.Millisecond)
		res, err := request(ws, req)
		if fe, ok := errors.AsType[*frameError](err); ok && fe.f.Retryable && attempt < 30 && ctx.Err() == nil {
			sleep(ctx, max(time.Duration(fe.f.RetryAfterMS)*time.Millisecond, 500*time.Millisecond))
			continue
		}
		return res, err
	}
}

// frameError is an error frame answering a request.
type frameError struct{ f protocol.Frame }

func (e *frameError) Error() string { return fmt.Sprintf("%s: %s", e.f.Code, e.f.Message) }

// request writes f and returns the frame answering it (its id), skipping any other frame
// (hello, live messages, receipts).
func request(ws *websocket.Conn, f protocol.Frame) (protocol.Frame, error) {
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteJSON(f); err != nil {
		return protocol.Frame{}, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		var r protocol.Frame
		if err := ws.ReadJSON(&r); err != nil {
			return r, err
		}
		if r.ID != f.ID {
			continue
		}
		if r.Type == protocol.TypeError {
			return r, &frameError{r}
		}
		return r, nil
	}
}
