// Package wire is the one place where Parley's domain values (internal/chat) become what the
// protocol and the REST API carry, and back: message frames, receipt frames, the sync request
// and result, and the table that maps every domain error to a protocol code, an HTTP status
// and a retry hint. The edge, the delivery workers and the REST API all use it, so a field or
// an error is shaped the same way on every path.
package wire
