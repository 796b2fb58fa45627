package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

func TestRecordRoundTrip(t *testing.T) {
	base := Entry{Conversation: chat.NewConversationID(), Sender: "alice", SenderDevice: "phone",
		ClientMsgID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Body: "héllo \"quoted\"",
		Kind: chat.MessageText, AcceptedAt: time.UnixMilli(1_795_380_881_123)}
	edit, added := base, base
	edit.Kind, edit.TargetSeq = chat.MessageEdit, 41
	added.Kind, added.TargetUser, added.Body = chat.MessageMemberAdded, "carol", ""
	for _, s := range []Entry{base, edit, added} {
		data, err := encodeEntry(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if got != s {
			t.Errorf("Decode(encode(s)) = %+v; want %+v", got, s)
		}
	}
	// A record without a kind (written before kinds existed) is a text message.
	got, err := Decode([]byte(`{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a","body":"b"}`))
	if err != nil || got.Kind != chat.MessageText {
		t.Errorf("Decode(no kind) = %+v, %v; want a text message", got, err)
	}
}

func TestDecodePoison(t *testing.T) {
	for name, data := range map[string]string{
		"not json":         `nope`,
		"bad conversation": `{"conversation":"x","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a","body":"b"}`,
		"bad cmid":         `{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"zz","sender":"a","body":"b"}`,
		"bad sender":       `{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a b","body":"b"}`,
		"unknown kind":     `{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a","kind":"poke"}`,
		"edit no target":   `{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a","kind":"edit","body":"b"}`,
		"added no member":  `{"conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0102030405060708090a0b0c0d0e0f10","sender":"a","kind":"member_added"}`,
	} {
		if _, err := Decode([]byte(data)); !errors.Is(err, ErrPoison) {
			t.Errorf("%s: Decode = %v; want ErrPoison", name, err)
		}
	}
}

// A conversation always maps to the same partition (FNV-1a of its 16 bytes, the value below
// computed independently: changing the hash would move conversations between partitions and
// break their order while messages are in flight), and conversations spread over all of them.
func TestPartition(t *testing.T) {
	id, _ := chat.ParseConversationID("7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10")
	if p16, p64 := Partition(id, 16), Partition(id, 64); p16 != 4 || p64 != 36 {
		t.Fatalf("partitions %d/16 and %d/64; want 4 and 36", p16, p64)
	}
	seen := map[int]bool{}
	for i := 0; i < 2000; i++ {
		p := Partition(chat.NewConversationID(), 16)
		if p < 0 || p >= 16 {
			t.Fatalf("partition %d out of range", p)
		}
		seen[p] = true
	}
	if len(seen) != 16 {
		t.Errorf("2000 conversations used %d of 16 partitions", len(seen))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]Config{
		"partitions": {Partitions: -1}, "replicas": {Replicas: 9}, "window": {DuplicateWindow: time.Millisecond},
		"timeout": {PublishTimeout: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
