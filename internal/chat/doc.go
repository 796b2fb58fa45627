// Package chat holds Parley's domain values: user, device and conversation identifiers,
// sequence numbers, messages and receipts, with their validation rules and sentinel errors.
// It is layer 0 and imports only the standard library, so every other package, the protocol
// and the SDKs can share one definition of what a valid value is.
package chat
