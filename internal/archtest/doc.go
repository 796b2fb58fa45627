// Package archtest holds tests that keep the architecture of docs/architecture.md true: the
// layer rules of imports (which package may import which) and a doc comment on every package.
// It has no code of its own; the rules live in its test.
package archtest
