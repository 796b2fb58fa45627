package protocol

import (
	"os"
	"testing"
)

func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"client.send", "client.ack", "client.sync"} {
		data, err := os.ReadFile("testdata/" + name + ".json")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeMessage(b *testing.B) {
	f := Frame{Type: TypeMessage, Conversation: "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10", Seq: 43, Sender: "alice",
		SenderDevice: "phone", ClientMsgID: "0b8e4f1c-3d2a-4e6b-8c9d-1a2b3c4d5e6f", Kind: "text", Body: "Hello, Bob", TS: 1795380881150}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(f); err != nil {
			b.Fatal(err)
		}
	}
}
