"""Offline checks of the Kubernetes manifests beyond schema validation.

For every storage StatefulSet, runs the container's shell command line as
Kubernetes would (after its `$$` -> `$` expansion) with a stand-in
`dynaraft` that records its arguments, for pod ordinals 0 and 1, and checks
that each pod's node id, zone and advertised address agree with the
control-plane list in the ConfigMap (ordinal 0 of each zone is a member),
and that every storage pod and router (router.yaml, when given) reads its
peer TLS files (and the router its API certificate and auth file) from a
Secret mounted at that path.
"""
import os
import subprocess
import sys
import tempfile

import yaml


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def flags(argv):
    out = {}
    for a, b in zip(argv, argv[1:] + [""]):
        if a.startswith("--"):
            out[a[2:]] = b
    return out


def run_pod(container, hostname, namespace, control, fake_bin):
    line = container["args"][0].replace("$$", "$")
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "HOSTNAME": hostname,
        "POD_NAMESPACE": namespace,
        "DYNARAFT_CONTROL": control,
    }
    out = subprocess.run(container["command"] + [line], env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split("\0")[:-1]


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


PEER_TLS = {"peer-tls-ca": "dynaraft-peer-tls", "peer-tls-cert": "dynaraft-peer-tls",
            "peer-tls-key": "dynaraft-peer-tls"}


def check_router(path, failures):
    for d in (o for o in docs(path) if o["kind"] == "Deployment"):
        spec = d["spec"]["template"]["spec"]
        container = spec["containers"][0]
        args = {}
        for a in container["args"]:
            if a.startswith("--") and "=" in a:
                k, v = a[2:].split("=", 1)
                args[k] = v
        wanted = dict(PEER_TLS, **{"tls-cert": "dynaraft-api-tls", "tls-key": "dynaraft-api-tls",
                                   "auth-file": "dynaraft-auth"})
        check_files(d["metadata"]["name"], args, mounted_secrets(spec, container), wanted, failures)
        print(f"{d['metadata']['name']}: TLS, peer TLS and auth files from Secrets")


def main(storage_path, router_path=None):
    objs = docs(storage_path)
    control = next(o for o in objs if o["kind"] == "ConfigMap")["data"]["control"]
    members = {}
    for m in control.split(","):
        ident, rest = m.split("=", 1)
        addr, zone = rest.split("@", 1)
        members[zone] = (int(ident), addr)
    failures = []
    with tempfile.TemporaryDirectory() as fake_bin:
        fake = os.path.join(fake_bin, "dynaraft")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\nprintf "%s\\0" "$@"\n')
        os.chmod(fake, 0o755)
        for sts in (o for o in objs if o["kind"] == "StatefulSet"):
            name = sts["metadata"]["name"]
            ns = sts["metadata"]["namespace"]
            container = sts["spec"]["template"]["spec"]["containers"][0]
            args = {}
            for ordinal in (0, 1):
                argv = run_pod(container, f"{name}-{ordinal}", ns, control, fake_bin)
                args[ordinal] = flags(argv)
            # Rolling upgrades go zone by zone (roll.sh), readiness means
            # caught up: /ready on the port --metrics-listen serves.
            if sts["spec"].get("updateStrategy", {}).get("type") != "OnDelete":
                failures.append(f"{name}: updateStrategy must be OnDelete (roll.sh upgrades zone by zone)")
            probe = container.get("readinessProbe", {}).get("httpGet", {})
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            listen = args[0].get("metrics-listen", "")
            if probe.get("path") != "/ready" or str(ports.get(probe.get("port"))) != listen.rsplit(":", 1)[-1]:
                failures.append(f"{name}: readiness must be GET /ready on the --metrics-listen port "
                                f"(probe {probe}, listen {listen!r}, ports {ports})")
            mounts = mounted_secrets(sts["spec"]["template"]["spec"], container)
            check_files(f"{name}-0", args[0], mounts, PEER_TLS, failures)
            zone = args[0]["az"]
            if zone not in members:
                failures.append(f"{name}: zone {zone} has no control member")
                continue
            ident, addr = members[zone]
            if int(args[0]["id"]) != ident or args[0]["advertise"] != addr:
                failures.append(f"{name}-0: id {args[0]['id']} at {args[0]['advertise']}, "
                                f"control list says {ident} at {addr}")
            if int(args[1]["id"]) != ident + 1:
                failures.append(f"{name}-1: id {args[1]['id']}, expected {ident + 1}")
            print(f"{name}: pod 0 is node {args[0]['id']} at {args[0]['advertise']}, "
                  f"pod 1 is node {args[1]['id']}")
    if router_path:
        check_router(router_path, failures)
    if len(members) != len([o for o in objs if o["kind"] == "StatefulSet"]):
        failures.append("one control member per zone StatefulSet expected")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
