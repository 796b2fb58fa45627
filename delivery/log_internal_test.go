package delivery

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

func v7At(t time.Time) chat.ClientMsgID {
	id := chat.NewClientMsgID()
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		id[i] = byte(ms >> (40 - 8*i))
	}
	id[6] = id[6]&0x0f | 0x70
	return id
}

// Only a UUIDv7 minted within the window before now (a minute of clock skew ahead allowed)
// counts as fresh; a v4 id never does.
func TestFreshV7(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	w := 5 * time.Minute
	cases := []struct {
		name string
		id   chat.ClientMsgID
		want bool
	}{
		{"just minted", v7At(now), true},
		{"4 minutes old", v7At(now.Add(-4 * time.Minute)), true},
		{"6 minutes old", v7At(now.Add(-6 * time.Minute)), false},
		{"30 s ahead", v7At(now.Add(30 * time.Second)), true},
		{"2 minutes ahead", v7At(now.Add(2 * time.Minute)), false},
		{"version 4", chat.NewClientMsgID(), false},
	}
	for _, c := range cases {
		if got := freshV7(c.id, now, w); got != c.want {
			t.Errorf("%s: freshV7 = %v; want %v", c.name, got, c.want)
		}
	}
}

// A log entry decodes to what was encoded, with its stream seq; a malformed one is an error.
func TestLogEntryRoundTrip(t *testing.T) {
	m := chat.Message{Conversation: chat.NewConversationID(), Seq: 42, Kind: chat.MessageMemberAdded, Sender: "alice",
		SenderDevice: "phone", ClientMsgID: chat.NewClientMsgID(), Body: "b", TargetSeq: 3, TargetUser: "bob",
		CreatedAt: time.UnixMilli(1_800_000_000_123).UTC()}
	data, err := encodeLogEntry(m, time.UnixMilli(1_800_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeLogEntry(data, 7)
	if err != nil {
		t.Fatal(err)
	}
	if e.streamSeq != 7 || e.acceptedAt.UnixMilli() != 1_800_000_000_000 || e.m.Seq != 42 || e.m.Conversation != m.Conversation ||
		e.m.ClientMsgID != m.ClientMsgID || e.m.TargetUser != "bob" || !e.m.CreatedAt.Equal(m.CreatedAt) || e.m.Kind != m.Kind {
		t.Errorf("decoded %+v; want %+v", e.m, m)
	}
	for _, bad := range []string{`{`, `{"conversation":"x","seq":1,"client_msg_id":"` + m.ClientMsgID.String() + `"}`,
		`{"conversation":"` + m.Conversation.String() + `","seq":0,"client_msg_id":"` + m.ClientMsgID.String() + `"}`} {
		if _, err := decodeLogEntry([]byte(bad), 1); err == nil {
			t.Errorf("decodeLogEntry(%s) succeeded", bad)
		}
	}
}
