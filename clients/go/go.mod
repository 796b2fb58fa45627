module github.com/parleyhq/parley/clients/go

go 1.26.8

require (
	github.com/gorilla/websocket v1.5.3
	github.com/parleyhq/parley/protocol v0.0.0-00010101000000-000000000000
)

replace github.com/parleyhq/parley/protocol => ../../protocol
