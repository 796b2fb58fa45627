package parley_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/parleyhq/parley/clients/go/parley"
)

// Dial needs a running server (make run); the quickstart in README.md shows the whole loop.
func ExampleDial() {
	ctx := context.Background()
	c, err := parley.Dial(ctx, "ws://127.0.0.1:8080/v1/ws", parley.WithToken(parley.StaticToken(os.Getenv("PARLEY_TOKEN"))))
	if err != nil {
		fmt.Println("cannot connect:", err)
		return
	}
	defer c.Close()
	for e := range c.Events() {
		if e.Kind == parley.EventMessage {
			fmt.Println(e.Message.Sender, e.Message.Body)
		}
	}
}

// A FileStore keeps the outbox and the cursors in one file, so a restarted process resends
// what was not accepted and resumes where it stopped.
func ExampleFileStore() {
	path := filepath.Join(os.TempDir(), "parley-example-state.json")
	defer os.Remove(path)
	store := parley.NewFileStore(path)
	_ = store.Save(parley.State{
		Cursors: map[string]int64{"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10": 42},
		Outbox: map[string]parley.Pending{"0b8e4f1c-3d2a-4e6b-8c9d-1a2b3c4d5e6f": {
			ClientMsgID: "0b8e4f1c-3d2a-4e6b-8c9d-1a2b3c4d5e6f", Conversation: "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10", Body: "see you", Seq: 1}},
	})

	again, _ := parley.NewFileStore(path).Load() // as after a restart
	fmt.Println("cursor:", again.Cursors["7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10"])
	for _, p := range again.Outbox {
		fmt.Println("to resend:", p.Body)
	}
	// Output:
	// cursor: 42
	// to resend: see you
}
