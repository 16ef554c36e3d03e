"""Offline checks of the Helm chart (deploy/helm/dynaraft), run by `make test-deploy`.

    check.py HELM KUBERNETES_VALIDATE K8S_VERSION [DYNARAFT]

1. `helm lint --strict`.
2. Renders the chart with its defaults and with variants (more zones and
   nodes, another release name, TLS, auth and the console off, an existing
   storage class, NetworkPolicy peers, a ServiceMonitor), validates every
   rendering against the Kubernetes schemas in strict mode, and checks what
   schemas cannot:
   - every storage pod's shell command line, run as Kubernetes would (after
     its `$$` -> `$` expansion) with a stand-in `dynaraft` recording its
     arguments, for every pod ordinal: node id, zone and advertised address
     agree with the control-plane list (ordinal 0 of each zone a member);
   - every pod's arguments are accepted by the real binary's parser (given
     DYNARAFT: flags known, values of their type);
   - exactly one kind of pod serves the API (storage pods given
     --api-listen on their `http` port, or routers; `api.servedBy`), and
     the clients' Service sends requests to it;
   - storage StatefulSets are OnDelete, ready on GET /ready at the
     --metrics-listen port, pinned to their zone, and their volumes use a
     WaitForFirstConsumer class when the chart makes one;
   - every TLS and auth file a pod reads is in the Secret mounted there;
   - every pod meets the "restricted" Pod Security Standard;
   - NetworkPolicies and the ServiceMonitor name ports that exist;
3. The plain manifests, deploy/k8s/dynaraft.yaml, are the default rendering
   (regenerate: `make k8s-manifests`).
4. Values that cannot work (fewer than three zones, no nodes per zone, a
   zone twice, a bad zone name) fail the rendering with a message naming
   the value.
"""
import os
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "dynaraft")
PLAIN = os.path.join(HERE, "..", "k8s", "dynaraft.yaml")

# The default rendering, as deploy/k8s/dynaraft.yaml holds it.
DEFAULT_RELEASE = ["dynaraft", "--namespace", "dynaraft", "--set", "namespace.create=true"]

VARIANTS = {
    "defaults": ({}, DEFAULT_RELEASE),
    "five zones, three nodes each, nothing optional": ({
        "zones": [{"name": f"zone-{c}", "topologyZone": f"eu-west-9{c}"} for c in "abcde"],
        "nodesPerZone": 3,
        "tls": {"peer": {"enabled": False}, "api": {"enabled": False}},
        "auth": {"enabled": False},
        "api": {"console": False},
        "storage": {"storageClass": {"create": False, "name": ""}},
        "metrics": {"annotations": False},
        "networkPolicy": {"enabled": False},
    }, ["prod", "--namespace", "db"]),
    "existing class, policy peers, ServiceMonitor": ({
        "storage": {"storageClass": {"create": False, "name": "fast-ssd"},
                    "extraArgs": ["--split-size-bytes", "1073741824"]},
        "networkPolicy": {"apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "app"}}}],
                          "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "metrics": {"serviceMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": True}}},
        "auth": {"secretName": "users", "key": "auth.json"},
        "api": {"servedBy": "routers", "extraArgs": ["--request-log"]},
        "router": {"replicas": 2},
    }, ["db", "--namespace", "data"]),
}

BAD = {
    "two zones": ({"zones": [{"name": "a", "topologyZone": "z1"}, {"name": "b", "topologyZone": "z2"}]},
                  "needs at least three availability zones"),
    "no nodes per zone": ({"nodesPerZone": 0}, "every zone needs at least one storage node"),
    "a zone twice": ({"zones": [{"name": "a", "topologyZone": "z1"}, {"name": "b", "topologyZone": "z2"},
                                {"name": "a", "topologyZone": "z3"}]}, 'the zone name "a" is given twice'),
    "a zone name that is no DNS label": ({"zones": [{"name": "Zone_A", "topologyZone": "z1"},
                                                    {"name": "b", "topologyZone": "z2"},
                                                    {"name": "c", "topologyZone": "z3"}]},
                                         "zones.0.name: Does not match pattern"),
    "an API served by something else": ({"api": {"servedBy": "proxies"}},
                                       'api.servedBy must be one of the following: "nodes", "routers"'),
    "a router value that moved to api": ({"router": {"port": 8000}},
                                         "router: Additional property port is not allowed"),
    "a class to make without a provisioner": ({"storage": {"storageClass": {"provisioner": ""}}},
                                              "storage.storageClass.provisioner"),
}

# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def render(helm, values, release):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(values, f)
    try:
        return subprocess.run([helm, "template", *release, CHART, "-f", f.name],
                              capture_output=True, text=True)
    finally:
        os.unlink(f.name)


def flags(argv):
    """--name value and --name=value, as clap reads them."""
    out = {}
    for a, b in zip(argv, argv[1:] + [""]):
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            out[name] = value if eq else b
    return out


def run_pod(container, hostname, namespace, control, fake_bin):
    """The arguments the pod's command line gives dynaraft."""
    line = container["args"][0].replace("$$", "$")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOSTNAME": hostname,
           "POD_NAMESPACE": namespace, "DYNARAFT_CONTROL": control}
    out = subprocess.run(container["command"] + [line], env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split("\0")[:-1]


def check_accepted(who, dynaraft, argv, failures):
    """The real binary's parser takes `argv`: every flag known, every value
    of its type (clap checks both before it answers --help)."""
    if not dynaraft:
        return
    out = subprocess.run([dynaraft, *argv, "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        failures.append(f"{who}: dynaraft refuses its arguments: {out.stderr.strip().splitlines()[0]}")


def mounted_secrets(pod_spec, container):
    """Mount path -> Secret name, for the container's Secret volumes."""
    secrets = {v["name"]: v["secret"]["secretName"]
               for v in pod_spec.get("volumes", []) if "secret" in v}
    return {m["mountPath"]: secrets[m["name"]]
            for m in container.get("volumeMounts", []) if m["name"] in secrets}


def check_files(who, args, mounts, wanted, failures):
    """Each flag in `wanted` names a file in a mounted Secret of that name."""
    for flag, secret in wanted.items():
        path = args.get(flag)
        if not path:
            failures.append(f"{who}: --{flag} missing")
            continue
        got = mounts.get(os.path.dirname(path))
        if got != secret:
            failures.append(f"{who}: --{flag} {path} is not in the Secret {secret} (mounted: {got})")


def check_secret_files(who, args, mounts, failures):
    """The API's and the peers' files a pod's flags name, each read from a
    Secret mounted at its directory; returns those flags."""
    files = [f for f in ("tls-cert", "tls-key", "auth-file", "peer-tls-ca", "peer-tls-cert",
                         "peer-tls-key") if f in args]
    wanted = {f: mounts.get(os.path.dirname(args[f])) or "(a Secret)" for f in files}
    check_files(who, args, mounts, wanted, failures)
    return files


def check_restricted(who, pod, failures):
    """The "restricted" Pod Security Standard, as its admission checks it."""
    sc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            failures.append(f"{who}: {key}")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            failures.append(f"{who}: volume {v['name']} of type {kinds - RESTRICTED_VOLUMES}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        csc = c.get("securityContext", {})
        name = f"{who}/{c['name']}"
        if not (csc.get("runAsNonRoot", sc.get("runAsNonRoot"))):
            failures.append(f"{name}: runAsNonRoot not set")
        if csc.get("runAsUser", sc.get("runAsUser")) == 0:
            failures.append(f"{name}: runs as user 0")
        if csc.get("allowPrivilegeEscalation") is not False:
            failures.append(f"{name}: allowPrivilegeEscalation must be false")
        if csc.get("privileged"):
            failures.append(f"{name}: privileged")
        caps = csc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            failures.append(f"{name}: capabilities must drop ALL (and add at most NET_BIND_SERVICE)")
        seccomp = csc.get("seccompProfile", sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            failures.append(f"{name}: seccompProfile {seccomp!r}")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                failures.append(f"{name}: hostPort")


def check_rendering(objs, fake_bin, dynaraft, failures):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    control = by_kind["ConfigMap"][0]["data"]["control"]
    members = {}
    for m in control.split(","):
        ident, rest = m.split("=", 1)
        addr, zone = rest.split("@", 1)
        members[zone] = (int(ident), addr)
    classes = {c["metadata"]["name"]: c for c in by_kind.get("StorageClass", [])}
    sets = by_kind.get("StatefulSet", [])
    serving = set()  # components whose pods serve the API
    if len(members) != len(sets):
        failures.append(f"{len(members)} control members for {len(sets)} zone StatefulSets")
    for sts in sets:
        name = sts["metadata"]["name"]
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        check_restricted(name, pod, failures)
        # Rolling upgrades go zone by zone (roll.sh).
        if spec.get("updateStrategy", {}).get("type") != "OnDelete":
            failures.append(f"{name}: updateStrategy must be OnDelete (roll.sh upgrades zone by zone)")
        argvs = [run_pod(container, f"{name}-{n}", sts["metadata"]["namespace"], control, fake_bin)
                 for n in range(spec["replicas"])]
        check_accepted(f"{name}-0", dynaraft, argvs[0], failures)
        pods = [flags(a) for a in argvs]
        first = pods[0]
        # Readiness means caught up: /ready on the port --metrics-listen serves.
        probe = container.get("readinessProbe", {}).get("httpGet", {})
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        listen = first.get("metrics-listen", "")
        if probe.get("path") != "/ready" or str(ports.get(probe.get("port"))) != listen.rsplit(":", 1)[-1]:
            failures.append(f"{name}: readiness must be GET /ready on the --metrics-listen port "
                            f"(probe {probe}, listen {listen!r}, ports {ports})")
        check_secret_files(f"{name}-0", first, mounted_secrets(pod, container), failures)
        if "api-listen" in first:
            # The API port the node listens on is the container's `http`.
            if ports.get("http") is None or str(ports["http"]) != first["api-listen"].rsplit(":", 1)[-1]:
                failures.append(f"{name}: --api-listen {first['api-listen']} is not the container's "
                                f"http port ({ports})")
            serving.add("storage")
        zone = first["az"]
        term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        keys = [e["key"] for t in term["nodeSelectorTerms"] for e in t["matchExpressions"]]
        if keys != ["topology.kubernetes.io/zone"]:
            failures.append(f"{name}: not pinned to its zone ({keys})")
        for claim in spec["volumeClaimTemplates"]:
            cls = claim["spec"].get("storageClassName")
            if cls in classes and classes[cls].get("volumeBindingMode") != "WaitForFirstConsumer":
                failures.append(f"{name}: class {cls} binds volumes before their pod is scheduled")
        if zone not in members:
            failures.append(f"{name}: zone {zone} has no control member")
            continue
        ident, addr = members[zone]
        if int(first["id"]) != ident or first["advertise"] != addr:
            failures.append(f"{name}-0: id {first['id']} at {first['advertise']}, control list says {ident} at {addr}")
        for n, args in enumerate(pods):
            if int(args["id"]) != ident + n or args["az"] != zone:
                failures.append(f"{name}-{n}: node {args['id']} in {args['az']}, expected {ident + n} in {zone}")
        api = f", API on {first['api-listen']}" if "api-listen" in first else ""
        print(f"  {name}: nodes {', '.join(a['id'] for a in pods)}, pod 0 at {addr}{api}")
    for d in by_kind.get("Deployment", []):
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        check_restricted(d["metadata"]["name"], pod, failures)
        args = flags(container["args"])
        check_accepted(d["metadata"]["name"], dynaraft, container["args"], failures)
        files = check_secret_files(d["metadata"]["name"], args, mounted_secrets(pod, container), failures)
        print(f"  {d['metadata']['name']}: reads {', '.join(files) or 'no files'} from Secrets")
        if container["args"][0] == "router":
            serving.add(d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"))
    # Exactly one kind of pod serves the API, and the clients' Service (the
    # one with an `http` port) sends requests to it, on its `http` port.
    if len(serving) != 1:
        failures.append(f"the API is served by {sorted(serving) or 'nothing'}, expected one kind of pod")
    for svc in by_kind.get("Service", []):
        if not any(p["name"] == "http" for p in svc["spec"]["ports"]):
            continue
        picked = svc["spec"]["selector"].get("app.kubernetes.io/component")
        if picked not in serving:
            failures.append(f"Service {svc['metadata']['name']} sends API requests to {picked} pods, "
                            f"which do not serve the API ({sorted(serving)} do)")
        else:
            print(f"  Service {svc['metadata']['name']}: the API, on the {picked} pods")
    # Ports named by NetworkPolicies and the ServiceMonitor exist.
    pod_ports = {p["name"] for o in sets + by_kind.get("Deployment", [])
                 for p in o["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
    service_ports = {p["name"] for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
    for np in by_kind.get("NetworkPolicy", []):
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p["port"] not in pod_ports:
                    failures.append(f"{np['metadata']['name']}: port {p['port']} is no pod's")
    for sm in by_kind.get("ServiceMonitor", []):
        for e in sm["spec"]["endpoints"]:
            if e["port"] not in service_ports:
                failures.append(f"{sm['metadata']['name']}: port {e['port']} is no Service's")


def main(helm, validate, k8s_version, dynaraft=None):
    failures = []
    subprocess.run([helm, "lint", "--strict", CHART], check=True, capture_output=True)
    print("helm lint --strict: passed")
    with tempfile.TemporaryDirectory() as tmp:
        fake_bin = os.path.join(tmp, "bin")
        os.mkdir(fake_bin)
        fake = os.path.join(fake_bin, "dynaraft")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\nprintf "%s\\0" "$@"\n')
        os.chmod(fake, 0o755)
        for label, (values, release) in VARIANTS.items():
            out = render(helm, values, release)
            if out.returncode != 0:
                failures.append(f"{label}: rendering failed: {out.stderr.strip()}")
                continue
            path = os.path.join(tmp, "rendered.yaml")
            with open(path, "w") as f:
                f.write(out.stdout)
            print(f"{label}:")
            # Strict: a field the schema does not know is an error. Kinds
            # of CRDs (ServiceMonitor) have no schema here; checked below.
            v = subprocess.run([validate, "--quiet", "--strict", "-k", k8s_version, path],
                               capture_output=True, text=True)
            problems = [line for line in (v.stdout + v.stderr).splitlines()
                        if line.strip() and "Couldn't find schema for kind ServiceMonitor" not in line]
            if v.returncode != 0 or problems:
                failures.append(f"{label}: schema validation: " + "; ".join(problems))
            check_rendering([d for d in yaml.safe_load_all(out.stdout) if d], fake_bin, dynaraft, failures)
            if release == DEFAULT_RELEASE:
                with open(PLAIN) as f:
                    if f.read() != out.stdout:
                        failures.append("deploy/k8s/dynaraft.yaml is not the chart's default rendering "
                                        "(run `make k8s-manifests`)")
        for label, (values, message) in BAD.items():
            out = render(helm, values, ["bad"])
            if out.returncode == 0 or message not in out.stderr:
                failures.append(f"{label}: expected the rendering to fail with {message!r}, "
                                f"got {out.returncode}: {out.stderr.strip()}")
            else:
                print(f"{label}: refused: {out.stderr.strip().splitlines()[0]}")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(*sys.argv[1:5])
