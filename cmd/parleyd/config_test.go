package main

import "flag"

func newFlagSetForTest(cfg *runConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.register(fs)
	return fs
}
