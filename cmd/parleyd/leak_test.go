//go:build !outage

package main

import "go.uber.org/goleak"

// leakOptions are the goroutines TestMain tolerates: none (see outage_test.go for the outage
// build).
var leakOptions []goleak.Option
