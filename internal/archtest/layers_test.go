package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/parleyhq/parley"

// rule says what a package may import from this module and which outside modules it must not
// import. Packages are matched by path prefix (relative to the module), longest first.
type rule struct {
	layer     string
	mayImport []string // module-relative prefixes; the standard library is always allowed
	forbidden []string // outside import path prefixes
	except    []string // outside import path prefixes allowed despite forbidden
}

// strictJSON is encoding/json/v2 as a module, the one outside import of layer 0: the
// protocol decodes frames and REST bodies with it (duplicate and case-variant keys refused).
const strictJSON = "github.com/go-json-experiment/json"

var (
	layer0  = []string{"protocol", "internal/chat", "docs"}
	layer1  = append(slices.Clone(layer0), "internal/auth", "internal/backend", "internal/schema", "internal/admin", "internal/routing", "internal/breaker", "internal/wire", "internal/revocation", "internal/cursor", "internal/origin", "presence", "history", "inbox")
	drivers = []string{"github.com/apache/cassandra-gocql-driver", "github.com/gocql/gocql", "github.com/redis/go-redis", "github.com/nats-io/nats.go"}
	// notCassandra and onlyCassandra forbid the drivers a part does not own.
	notCassandra  = []string{"github.com/apache/cassandra-gocql-driver", "github.com/gocql/gocql"}
	onlyCassandra = []string{"github.com/redis/go-redis", "github.com/nats-io/nats.go"}
)

// with is prefixes plus more.
func with(prefixes []string, more ...string) []string { return append(slices.Clone(prefixes), more...) }

// rules is the layer table of docs/architecture.md and ../shared/STYLE.md.
var rules = map[string]rule{
	// Layer 0: the wire contract and the domain values, standard library only (and the
	// protocol's strict JSON decoder).
	"protocol":      {layer: "0", forbidden: []string{"github.com/"}, except: []string{strictJSON}},
	"internal/chat": {layer: "0", forbidden: []string{"github.com/"}},
	"docs":          {layer: "0", forbidden: []string{"github.com/"}},
	// Layer 1: one part each, on its own driver at most.
	"internal/auth":    {layer: "1", mayImport: layer0, forbidden: drivers},
	"internal/backend": {layer: "1", mayImport: layer0},
	"internal/schema":  {layer: "1", mayImport: layer0, forbidden: onlyCassandra},
	"internal/admin":   {layer: "1", mayImport: layer0, forbidden: drivers},
	"internal/routing": {layer: "1", mayImport: layer0, forbidden: with(notCassandra, "github.com/redis/go-redis")},
	"internal/breaker": {layer: "1", mayImport: nil, forbidden: drivers},
	"internal/cli":     {layer: "1", mayImport: nil, forbidden: []string{"github.com/"}}, // not in layer1: only cmd/ may import it
	"internal/origin":  {layer: "1", mayImport: nil, forbidden: []string{"github.com/"}},
	"internal/wire":    {layer: "1", mayImport: with(layer0, "internal/breaker"), forbidden: drivers},
	"internal/cursor":  {layer: "1", mayImport: layer0, forbidden: []string{"github.com/"}},
	// Revocations are auth's values, stored in and broadcast through NATS KV.
	"internal/revocation": {layer: "1", mayImport: with(layer0, "internal/auth"), forbidden: with(notCassandra, "github.com/redis/go-redis")},
	"presence":            {layer: "1", mayImport: with(layer0, "internal/breaker", "internal/routing"), forbidden: notCassandra},
	"history":             {layer: "1", mayImport: with(layer0, "internal/breaker"), forbidden: onlyCassandra},
	// The inbox reads conversations, members and messages through the history store, and
	// signs its since-tokens with internal/cursor.
	"inbox": {layer: "1", mayImport: with(layer0, "internal/breaker", "internal/cursor", "history"), forbidden: onlyCassandra},
	// Layer 2: the pipeline and the REST API.
	"delivery": {layer: "2", mayImport: layer1},
	// The REST API posts messages through the same pipeline as the edge: the publishing side.
	"httpapi": {layer: "2", mayImport: with(layer1, "delivery/ingest")},
	// Layer 3: the edge never touches Cassandra, history or inbox, not even transitively
	// (TestEdgeDoesNotDependOnCassandra): it publishes through delivery/ingest.
	"edge": {layer: "3", mayImport: []string{"protocol", "internal/chat", "internal/auth", "internal/routing", "internal/wire", "internal/origin", "presence", "delivery/ingest"},
		forbidden: notCassandra},
	// Layer 4: binaries wire everything.
	"cmd": {layer: "4", mayImport: []string{""}},
	// Clients speak the protocol only, like any third-party client.
	"clients/go": {layer: "sdk", mayImport: []string{"protocol", "clients/go"}, forbidden: drivers},
	// The edge fan-out scenario publishes on NATS user subjects as delivery does, so loadtest may
	// use nats.go and the subject names of internal/routing; never the stores' drivers.
	"loadtest": {layer: "loadtest", mayImport: []string{"protocol", "clients/go", "internal/auth", "internal/chat", "internal/routing", "loadtest"},
		forbidden: with(notCassandra, "github.com/redis/go-redis")},
	// The fault-injection suite drives Parley from outside like the load test, and signals
	// processes by PID: never the stores' or NATS's drivers.
	"chaos": {layer: "chaos", mayImport: []string{"protocol", "clients/go", "internal/auth", "internal/chat"},
		forbidden: drivers},
	// Test-only helpers, this package, and the SDK's tests against parleyd (their imports are
	// all in _test.go files, which these rules do not restrict).
	"internal/teststack": {layer: "test", mayImport: layer1},
	"internal/archtest":  {layer: "test"},
	"clients/gotest":     {layer: "test"},
}

type pkg struct {
	Deps         []string
	ImportPath   string
	Module       struct{ Path string }
	Name         string
	Doc          string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found %d packages; want the whole module", len(pkgs))
	}
	// In workspace mode the pattern matches the packages of every module of go.work; without
	// it (GOWORK=off) only the root module's, and the rules would pass unchecked.
	for rel := range modules {
		if !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.Module.Path == modulePath(rel) }) {
			t.Fatalf("go list %s/... found no package of module %s: run the tests in the workspace (go.work), not with GOWORK=off", module, modulePath(rel))
		}
	}
	return pkgs
}

func rel(importPath string) (string, bool) {
	if importPath == module {
		return "", true
	}
	r, ok := strings.CutPrefix(importPath, module+"/")
	return r, ok
}

// ruleFor returns the rule of the longest matching prefix.
func ruleFor(path string) (string, rule, bool) {
	best := ""
	found := false
	for prefix := range rules {
		if (path == prefix || strings.HasPrefix(path, prefix+"/")) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	return best, rules[best], found
}

func allowed(r rule, path string) bool {
	for _, p := range r.mayImport {
		if p == "" || path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

func TestImportLayers(t *testing.T) {
	for _, p := range listPackages(t) {
		path, _ := rel(p.ImportPath)
		prefix, r, ok := ruleFor(path)
		if !ok {
			t.Errorf("package %s has no layer: add it to the rules here and to docs/architecture.md", path)
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasSuffix(imp, "internal/teststack") {
				t.Errorf("%s imports internal/teststack outside a test", path)
			}
			if ip, internal := rel(imp); internal {
				if ipPrefix, _, _ := ruleFor(ip); ipPrefix == prefix {
					continue // inside its own part
				}
				if !allowed(r, ip) {
					t.Errorf("%s (layer %s) imports %s, which its layer may not (see docs/architecture.md)", path, r.layer, ip)
				}
				continue
			}
			for _, f := range r.forbidden {
				if strings.HasPrefix(imp, f) && !slices.ContainsFunc(r.except, func(e string) bool { return strings.HasPrefix(imp, e) }) {
					t.Errorf("%s (layer %s) imports %s, which its layer may not", path, r.layer, imp)
				}
			}
		}
	}
}

// The edge must not depend on the Cassandra driver even through another package: an edge-only
// process then links no Cassandra code at all.
func TestEdgeDoesNotDependOnCassandra(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/edge" {
			continue
		}
		if !slices.Contains(p.Deps, "github.com/gorilla/websocket") {
			t.Fatalf("edge's dependency list %v lacks gorilla/websocket: go list gave no Deps", p.Deps)
		}
		for _, d := range p.Deps {
			if strings.Contains(d, "gocql") || strings.HasSuffix(d, "/history") || strings.HasSuffix(d, "/inbox") {
				t.Errorf("edge depends on %s", d)
			}
		}
		return
	}
	t.Fatal("edge package not found")
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
	}
}

// The rules themselves must catch a violation: the edge importing the Cassandra driver or the
// history package, and the SDK importing anything but the protocol.
func TestRulesCatchViolations(t *testing.T) {
	cases := []struct{ from, imp string }{
		{"edge", "history"},
		{"edge", "inbox"},
		{"clients/go/parley", "internal/auth"},
		{"protocol", "internal/chat"},
		{"internal/chat", "internal/auth"},
		{"delivery", "edge"},
		{"internal/wire", "history"},
		{"internal/wire", "inbox"},
		{"internal/breaker", "internal/backend"},
		{"presence", "internal/backend"},
		{"history", "inbox"},
		{"httpapi", "edge"},
		{"delivery", "internal/cli"},
		{"edge", "internal/cli"},
		{"loadtest", "internal/cli"},
		{"internal/teststack", "internal/cli"},
	}
	for _, c := range cases {
		_, r, ok := ruleFor(c.from)
		if !ok {
			t.Fatalf("no rule for %s", c.from)
		}
		if allowed(r, c.imp) {
			t.Errorf("rule of %s allows importing %s", c.from, c.imp)
		}
	}
	_, r, _ := ruleFor("edge")
	if !slices.ContainsFunc(r.forbidden, func(f string) bool {
		return strings.HasPrefix("github.com/apache/cassandra-gocql-driver/v2", f)
	}) {
		t.Error("edge may import the Cassandra driver")
	}
}
