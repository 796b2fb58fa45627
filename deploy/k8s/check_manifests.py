"""Checks rendered Kubernetes manifests against the parleyd binary they run.

Run by validate.sh (after kubeconform has checked the schemas) with the Python of its venv,
which has PyYAML:

    check_manifests.py --parleyd bin/parleyd --secret secret.example.yaml rendered.yaml...

It fails when
  - a container runs a parleyd subcommand that the binary does not have;
  - a --flag in a container's command or args is not a flag of that subcommand;
  - an environment variable set on a parleyd container is not read by its subcommand
    (PARLEY_* names come from `parleyd SUBCOMMAND --help`; a few Go runtime variables are
    allowed); the same for every key of a ConfigMap loaded with envFrom: each must be read by
    at least one container that loads it. parleyd ignores environment variables it does not
    know, so without this check a misspelt key would be dropped silently;
  - a Secret key that a pod needs (not optional) is not in secret.example.yaml;
  - the shutdown timing does not add up: the edge caps its drain window at half of
    --shutdown-timeout, terminationGracePeriodSeconds must cover preStop + --shutdown-timeout
    + a margin, and an edge Deployment's minReadySeconds must cover preStop + drain window so
    that a rolling update drains one edge at a time;
  - GOMEMLIMIT is not below the container's memory limit.
"""

import argparse
import re
import subprocess
import sys

import yaml

# Flags accepted although this binary may not have them yet (none now). Once `parleyd run
# --help` lists one the script says so, and it should be removed from this list.
PENDING_RUN_FLAGS = {}

# Environment variables of the Go runtime that a parleyd container may set.
GO_RUNTIME_ENV = {"GOMEMLIMIT", "GOGC", "GOMAXPROCS", "GODEBUG"}

# Seconds between the end of --shutdown-timeout and the kubelet's SIGKILL.
GRACE_MARGIN = 5

HELP_LINE = re.compile(r"^  --([a-z0-9-]+)  (PARLEY_[A-Z0-9_]+)(?: \(default ([^,)]*))?")
COMMAND_LINE = re.compile(r"^  ([a-z]+)\s{2,}")


class Help:
    """The flags of one subcommand, from its --help."""

    def __init__(self, text):
        self.flags = {}  # flag name -> env name
        self.defaults = {}  # env name -> default text
        for line in text.splitlines():
            m = HELP_LINE.match(line)
            if m:
                self.flags[m.group(1)] = m.group(2)
                if m.group(3) is not None:
                    self.defaults[m.group(2)] = m.group(3)
        self.envs = set(self.flags.values())


def run_help(parleyd, args):
    p = subprocess.run([parleyd, *args, "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"check_manifests: {parleyd} {' '.join(args)} --help failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def subcommands(parleyd):
    names = set()
    in_commands = False
    for line in run_help(parleyd, []).splitlines():
        if line.startswith("Commands:"):
            in_commands = True
            continue
        if in_commands:
            m = COMMAND_LINE.match(line)
            if m:
                names.add(m.group(1))
            elif line.strip() == "":
                in_commands = False
    if not names:
        raise SystemExit(f"check_manifests: no commands found in `{parleyd} --help`")
    return names


DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
DURATION_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def seconds(d):
    """A Go duration ("1m30s", "45s") in seconds."""
    parts = DURATION_PART.findall(d)
    if not parts or "".join(n + u for n, u in parts) != d:
        raise ValueError(f"not a duration: {d!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


BYTE_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def k8s_bytes(q):
    m = re.fullmatch(r"(\d+)(k|M|G|Ki|Mi|Gi|Ti)?", str(q))
    if not m:
        raise ValueError(f"not a memory quantity: {q!r}")
    return int(m.group(1)) * BYTE_UNITS[m.group(2) or ""]


def go_bytes(v):
    m = re.fullmatch(r"(\d+)(B|KiB|MiB|GiB|TiB)?", v)
    if not m:
        raise ValueError(f"not a GOMEMLIMIT value: {v!r}")
    return int(m.group(1)) * {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[m.group(2) or ""]


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind == "Pod":
        return spec
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parleyd", required=True)
    ap.add_argument("--secret", required=True, help="the example Secret that documents the keys")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    commands = subcommands(a.parleyd)
    helps = {}

    def help_of(sub):
        if sub not in helps:
            h = Help(run_help(a.parleyd, [sub]))
            if sub == "run":
                for flag, env in PENDING_RUN_FLAGS.items():
                    if flag in h.flags:
                        print(f"check_manifests: note: --{flag} is in parleyd now; remove it from PENDING_RUN_FLAGS")
                    else:
                        pending.append(flag)
                        h.flags[flag] = env
                h.envs = set(h.flags.values())
            helps[sub] = h
        return helps[sub]

    pending = []  # pending flags the binary does not have yet

    docs = []
    for f in a.files:
        with open(f) as fh:
            docs += [(f, d) for d in yaml.safe_load_all(fh) if d]
    with open(a.secret) as fh:
        secret_keys = set((yaml.safe_load(fh).get("stringData") or {}).keys())

    # (file, name) -> data: a ConfigMap is found in the rendering its pods come from.
    configmaps = {(f, (d.get("metadata") or {}).get("name")): d.get("data") or {} for f, d in docs if d.get("kind") == "ConfigMap"}
    cm_readers = {}  # (file, name) -> the subcommands of the containers loading it
    problems = []
    checked_envs = checked_flags = containers = 0

    for f, doc in docs:
        spec = pod_spec(doc)
        if not spec:
            continue
        where = f"{f}: {doc['kind']} {doc['metadata']['name']}"
        for c in spec.get("containers") or []:
            argv = [*(c.get("command") or []), *(c.get("args") or [])]
            if not argv or argv[0].rsplit("/", 1)[-1] != "parleyd":
                continue
            containers += 1
            cw = f"{where}, container {c['name']}"
            if len(argv) < 2 or argv[1] not in commands:
                problems.append(f"{cw}: runs parleyd without one of its commands ({', '.join(sorted(commands))}): {argv}")
                continue
            sub = argv[1]
            h = help_of(sub)
            for arg in argv[2:]:
                if arg.startswith("--"):
                    checked_flags += 1
                    name = arg[2:].split("=", 1)[0]
                    if name not in h.flags:
                        problems.append(f"{cw}: flag --{name} is not a flag of `parleyd {sub}`")
            env = {}
            for e in c.get("env") or []:
                checked_envs += 1
                n = e["name"]
                if n in GO_RUNTIME_ENV:
                    pass
                elif n not in h.envs:
                    problems.append(f"{cw}: environment variable {n} is not read by `parleyd {sub}`")
                if "value" in e:
                    env[n] = str(e["value"])
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional") and ref.get("key") not in secret_keys:
                    problems.append(f"{cw}: {n} needs key {ref.get('key')!r} of Secret {ref.get('name')}, which {a.secret} does not list")
            for v in spec.get("volumes") or []:
                sec = v.get("secret")
                if sec and not sec.get("optional"):
                    for item in sec.get("items") or []:
                        if item["key"] not in secret_keys:
                            problems.append(f"{where}: volume {v['name']} needs key {item['key']!r} of Secret {sec.get('secretName')}, which {a.secret} does not list")
            fromcm = {}
            for ef in c.get("envFrom") or []:
                ref = ef.get("configMapRef")
                if not ref:
                    continue
                key = (f, ref["name"])
                if key not in configmaps:
                    if not ref.get("optional"):
                        problems.append(f"{cw}: envFrom ConfigMap {ref['name']} is not in {f}")
                    continue
                cm_readers.setdefault(key, set()).add(sub)
                fromcm.update({k: str(v) for k, v in configmaps[key].items()})

            # The timing of a role process's shutdown.
            if sub != "run" or doc["kind"] != "Deployment":
                continue
            eff = {**fromcm, **env}  # an env entry wins over envFrom

            def setting(name):
                return eff.get(name, h.defaults.get(name))

            try:
                shutdown = seconds(setting("PARLEY_SHUTDOWN_TIMEOUT"))
                drain = seconds(setting("PARLEY_EDGE_DRAIN_WINDOW"))
            except (TypeError, ValueError) as err:
                problems.append(f"{cw}: cannot read the shutdown settings: {err}")
                continue
            roles = setting("PARLEY_ROLES") or "all"
            edge = any(r.strip() in ("edge", "all") for r in roles.split(","))
            prestop = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds", 0)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < prestop + shutdown + GRACE_MARGIN:
                problems.append(
                    f"{cw}: terminationGracePeriodSeconds {grace} < preStop {prestop} s + shutdown timeout {shutdown:g} s + margin {GRACE_MARGIN} s")
            if edge:
                if shutdown < 2 * drain:
                    problems.append(
                        f"{cw}: shutdown timeout {shutdown:g} s < 2 x drain window {drain:g} s (the edge would cut its drain window to {shutdown / 2:g} s)")
                if prestop == 0:
                    problems.append(f"{cw}: an edge without a preStop sleep gets SIGTERM while its endpoint may still receive clients")
                min_ready = doc["spec"].get("minReadySeconds", 0)
                if min_ready < prestop + drain:
                    problems.append(
                        f"{cw}: minReadySeconds {min_ready} < preStop {prestop} s + drain window {drain:g} s: a rolling update would drain two edges at once")
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            if "GOMEMLIMIT" in env and limit is not None:
                try:
                    if go_bytes(env["GOMEMLIMIT"]) >= k8s_bytes(limit):
                        problems.append(f"{cw}: GOMEMLIMIT {env['GOMEMLIMIT']} is not below the memory limit {limit}")
                except ValueError as err:
                    problems.append(f"{cw}: {err}")

    for (f, name), subs in cm_readers.items():
        data = configmaps[(f, name)]
        known = set().union(*(help_of(s).envs for s in subs))
        for k in data:
            checked_envs += 1
            if k not in known:
                problems.append(f"{f}: ConfigMap {name}: key {k} is not read by parleyd {' or '.join(sorted(subs))}")

    if containers == 0:
        problems.append("no container runs parleyd: nothing was checked")
    for p in problems:
        print(f"check_manifests: {p}", file=sys.stderr)
    if problems:
        print(f"check_manifests: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_manifests: {containers} parleyd containers, {checked_envs} environment variables and "
          f"{checked_flags} flags match `parleyd --help`; shutdown timing and memory limits add up"
          + (f" (allowlisted, not in this parleyd yet: {', '.join('--' + f for f in pending)})" if pending else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
