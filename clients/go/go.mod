module github.com/parleyhq/parley/clients/go

go 1.26.8

require (
	github.com/gorilla/websocket v1.5.3
	github.com/parleyhq/parley/protocol v0.0.0-00010101000000-000000000000
)

require github.com/go-json-experiment/json v1.27.2 // indirect

replace github.com/parleyhq/parley/protocol => ../../protocol
