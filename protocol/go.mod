module github.com/parleyhq/parley/protocol

go 1.26.8
