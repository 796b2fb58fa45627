#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/k8s (make k8s-validate; make test runs it):
#   1. renders the base and every overlay with kustomize;
#   2. checks every rendered object, and secret.example.yaml, with kubeconform -strict against
#      the Kubernetes JSON schemas of each version in PARLEY_K8S_VERSIONS (a misspelt field or
#      a wrong type fails);
#   3. checks the manifests against the parleyd they run (check_manifests.py): every flag and
#      PARLEY_* variable must exist in `parleyd COMMAND --help`, and the shutdown timing must
#      add up.
# Offline apart from the first run, which installs into the cache (PARLEY_CACHE_DIR, default
# ~/.cache/parley) what is missing: kubeconform and kustomize (go install, Go module proxy), and
# a Python venv with the PyPI package kubernetes-validate, whose bundled schemas kubeconform
# reads (kubeconform's own schema download is not reachable from here). Idempotent.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${PARLEY_CACHE_DIR:-$HOME/.cache/parley}
GO=${GO:-go}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.8.0}
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.1}
KUBERNETES_VALIDATE_VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
# The oldest Kubernetes these manifests are for (the preStop sleep action is on by default
# from 1.30) and the newest that kubernetes-validate has schemas of.
PARLEY_K8S_VERSIONS=${PARLEY_K8S_VERSIONS:-1.30.0 1.37.0}

die() {
	echo "k8s-validate: $*" >&2
	exit 1
}

# go_tool NAME MODULE VERSION: $cache/bin/NAME built from MODULE at VERSION.
go_tool() {
	local name=$1 module=$2 version=$3 bin=$cache/bin/$1 have
	have=$("$GO" version -m "$bin" 2>/dev/null | awk '$1 == "mod" {print $3}') || true
	if [[ $have != "$version" ]]; then
		echo "k8s-validate: installing $name $version into $cache/bin" >&2
		mkdir -p "$cache/bin"
		GOBIN=$cache/bin GOFLAGS=-mod=mod "$GO" install "$module@$version" >&2 ||
			die "go install $module@$version failed (it needs the Go module proxy)"
	fi
	echo "$bin"
}

command -v "$GO" >/dev/null || die "go not found (set GO=...)"
command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
kubeconform=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")
kustomize=$(go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION")

venv=$cache/k8s-venv
py=$venv/bin/python
pkg_version() { "$py" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null; }
if [[ ! -x $py ]] || [[ $(pkg_version) != "$KUBERNETES_VALIDATE_VERSION" ]]; then
	echo "k8s-validate: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv" >&2
	python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
	"$py" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 ||
		die "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed (it needs PyPI)"
fi

# kubernetes-validate's schemas refer to their shared definitions by an absolute URL
# (https://kubernetes.io/api/_definitions.json), which kubeconform would try to download and,
# failing that, report as "could not find schema". The copy made here refers to the file next
# to it instead, in kubeconform's layout: $schemas/v1.37.0-strict/deployment-apps-v1.json.
schemas=$cache/k8s-schemas/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
for v in $PARLEY_K8S_VERSIONS; do
	[[ -f $schemas/v$v-strict/.complete ]] && continue
	echo "k8s-validate: preparing the schemas of Kubernetes $v in $schemas" >&2
	mkdir -p "$schemas"
	tmp=$(mktemp -d "$schemas/.v$v.XXXXXX")
	"$py" - "$v" "$tmp" <<'EOF' || { rm -rf "$tmp"; die "no schemas of Kubernetes $v in kubernetes-validate $KUBERNETES_VALIDATE_VERSION"; }
import json, os, sys
import kubernetes_validate
version, dst = sys.argv[1], sys.argv[2]
src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", f"v{version}-local-strict")
if not os.path.isdir(src):
    sys.exit(f"missing {src}")
def relink(o):
    if isinstance(o, dict):
        return {k: (v.replace("/api/_definitions.json", "_definitions.json")
                    if k == "$ref" and isinstance(v, str) else relink(v)) for k, v in o.items()}
    if isinstance(o, list):
        return [relink(v) for v in o]
    return o
for name in os.listdir(src):
    with open(os.path.join(src, name)) as f:
        doc = json.load(f)
    doc.pop("$id", None)  # so a reference resolves against the file's own location
    with open(os.path.join(dst, name), "w") as f:
        json.dump(relink(doc), f)
open(os.path.join(dst, ".complete"), "w").close()
EOF
	rm -rf "$schemas/v$v-strict"
	mv "$tmp" "$schemas/v$v-strict"
done

work=$(mktemp -d -t parley-k8s.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$GO" build -C "$root" -o "$work/parleyd" ./cmd/parleyd || die "go build ./cmd/parleyd failed"

rendered=()
for dir in "$here/base" "$here"/overlays/*/; do
	dir=${dir%/}
	out=$work/$(basename "$(dirname "$dir")")-$(basename "$dir").yaml
	[[ $dir == "$here/base" ]] && out=$work/base.yaml
	"$kustomize" build "$dir" >"$out" || die "kustomize build ${dir#"$root"/} failed"
	echo "$(basename "$out"): kustomize build ${dir#"$root"/}"
	rendered+=("$out")
done

status=0
for v in $PARLEY_K8S_VERSIONS; do
	echo "kubeconform, Kubernetes $v:"
	"$kubeconform" -strict -summary -kubernetes-version "$v" \
		-schema-location "$schemas/{{ .NormalizedKubernetesVersion }}{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
		"${rendered[@]}" "$here/secret.example.yaml" || status=1
done
"$py" "$here/check_manifests.py" --parleyd "$work/parleyd" --secret "$here/secret.example.yaml" "${rendered[@]}" || status=1
if [[ $status -ne 0 ]]; then
	die "deploy/k8s is not valid (see above)"
fi
echo "k8s-validate: ok"
