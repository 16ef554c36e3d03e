"""Offline checks of the Kubernetes manifests beyond schema validation.

For every storage StatefulSet, runs the container's shell command line as
Kubernetes would (after its `$$` -> `$` expansion) with a stand-in
`dynaraft` that records its arguments, for pod ordinals 0 and 1, and checks
that each pod's node id, zone and advertised address agree with the
control-plane list in the ConfigMap (ordinal 0 of each zone is a member).
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


def main(storage_path):
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
    if len(members) != len([o for o in objs if o["kind"] == "StatefulSet"]):
        failures.append("one control member per zone StatefulSet expected")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1])
