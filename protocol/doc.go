// Package protocol is Parley's wire contract, version 1: the WebSocket subprotocol, the frame
// envelope and every frame type, the error codes with their retryability, the close codes, the
// limits a server announces, and the JSON codec. docs/protocol.md is its specification, and
// the golden frames in testdata/ pin the encoding for every SDK.
//
// It is layer 0: standard library only, so any client can import it without the server.
package protocol
