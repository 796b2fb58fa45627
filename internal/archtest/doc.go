// Package archtest holds tests that keep the architecture of docs/architecture.md true: the
// layer rules of imports (which package may import which), a doc comment on every package,
// and the modules (every go.mod is in go.work; the protocol and the SDK build on their own
// requirements, and their module graphs hold only what an app that imports them should get).
// It has no code of its own; the rules live in its tests.
package archtest
