package archtest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// modules are the repository's modules, by directory relative to the root, each with every
// module its own graph may hold (nil: anything). The server is the root module; protocol and
// the Go SDK are modules of their own so that an app importing the SDK gets the protocol and
// gorilla/websocket in its go.sum, not the server's drivers. go.work lists all of them, so one
// `go test` from the root covers every package.
var modules = map[string][]string{
	"":           nil,
	"protocol":   {module + "/protocol", strictJSON},
	"clients/go": {module + "/clients/go", module + "/protocol", strictJSON, "github.com/gorilla/websocket"},
}

func modulePath(rel string) string {
	if rel == "" {
		return module
	}
	return module + "/" + rel
}

// goOut runs the go command in dir and returns its standard output, failing the test with
// its standard error. GOWORK=off in env makes it see the module in dir alone, as an app that
// depends on it would.
func goOut(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(goOut(t, ".", nil, "list", "-m", "-f", "{{.Dir}}", module))
}

// Every go.mod in the repository is a module of the workspace and of the table above: a
// module go.work does not list would be left out of make test and make lint without a word.
func TestWorkspaceHasEveryModule(t *testing.T) {
	root := repoRoot(t)
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.Name() == "go.mod" {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			found = append(found, strings.TrimPrefix(filepath.ToSlash(rel), "."))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var workspace []string
	for _, dir := range strings.Fields(goOut(t, root, nil, "list", "-m", "-f", "{{.Dir}}")) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		workspace = append(workspace, strings.TrimPrefix(filepath.ToSlash(rel), "."))
	}
	var table []string
	for rel := range modules {
		table = append(table, rel)
	}
	slices.Sort(found)
	slices.Sort(workspace)
	slices.Sort(table)
	if !slices.Equal(found, workspace) {
		t.Errorf("modules in the repository %q, in go.work %q: every go.mod belongs in go.work", found, workspace)
	}
	if !slices.Equal(found, table) {
		t.Errorf("modules in the repository %q, in this test's table %q: add the module here and to docs/architecture.md", found, table)
	}
}

// The protocol and the SDK build on their own requirements (their replace directives point at
// the neighbouring module in the repository) and their module graphs hold nothing beyond
// their table entry: what an app that imports the SDK adds to its go.sum.
func TestModuleGraphs(t *testing.T) {
	root := repoRoot(t)
	for rel, allowed := range modules {
		if allowed == nil {
			continue
		}
		t.Run(rel, func(t *testing.T) {
			dir := filepath.Join(root, filepath.FromSlash(rel))
			standalone := []string{"GOWORK=off"}
			// Every import of its packages and their tests resolves without the workspace.
			goOut(t, dir, standalone, "list", "-deps", "-test", "./...")
			for _, m := range strings.Fields(goOut(t, dir, standalone, "list", "-m", "-f", "{{.Path}}", "all")) {
				if !slices.Contains(allowed, m) {
					t.Errorf("module %s has %s in its graph (go list -m all); it may have only %v", modulePath(rel), m, allowed)
				}
			}
		})
	}
}
