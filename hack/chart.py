#!/usr/bin/env python3
"""The Helm chart's checks, offline (PyPI: helm-python-sdk, kubernetes-validate).

  hack/chart.py check                  lint strictly; CRDs in sync with crds/; render with the
                                       default values and every charts/baton/ci/*.yaml, and
                                       validate each manifest against the Kubernetes schemas;
                                       bad values are refused by values.schema.json
  hack/chart.py processes [JSON]       one render, with JSON values over the defaults: the
                                       command and args of every container, and the data
                                       (decoded) and stringData of every Secret, as JSON
"""

import base64
import json
import pathlib
import sys

import helm_python
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "baton"
KUBERNETES = "1.30.0"
RELEASE, NAMESPACE = "baton", "baton-system"


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    try:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()


def documents(rendered):
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def validate(source, doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        sys.exit(f"{source}: {name} is not a valid Kubernetes {KUBERNETES} object: {e.message} at {list(e.path)}")


def check():
    report = helm_python.lint(str(CHART), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        sys.exit(f"helm lint --strict: {problems}")
    print(f"lint: ok ({len(report['messages'])} informational)")

    ours, charted = ROOT / "crds" / "baton.dev.yaml", CHART / "crds" / "baton.dev.yaml"
    if ours.read_text() != charted.read_text():
        sys.exit(f"{charted} differs from {ours}: cp {ours.relative_to(ROOT)} {charted.relative_to(ROOT)}")
    crds = list(yaml.safe_load_all(charted.read_text()))
    for crd in crds:
        validate(str(charted), crd)
    print(f"crds: in sync with crds/, {len(crds)} valid")

    value_sets = [("default values", {})]
    for path in sorted((CHART / "ci").glob("*.yaml")):
        value_sets.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    for label, values in value_sets:
        rendered = render(values)
        kinds = []
        for path, doc in documents(rendered):
            validate(f"{label}: {path}", doc)
            kinds.append(doc["kind"])
        notes = rendered.get("baton/templates/NOTES.txt", "")
        if "kubectl" not in notes:
            sys.exit(f"{label}: NOTES.txt says nothing to do next")
        print(f"render ({label}): {len(kinds)} manifests valid: {', '.join(sorted(set(kinds)))}")

    check_secure_store()
    check_agent_isolation()
    check_agent_identities()
    check_views()
    check_dns()

    for bad, field in [({"controller": {"replicas": 0}}, "replicas"), ({"controler": {}}, "controler"),
                       ({"agent": {"ports": "lots"}}, "ports")]:
        try:
            render(bad)
        except helm_python.HelmError as e:
            if field not in str(e):
                sys.exit(f"values {bad} were refused, but the error does not name {field!r}: {e}")
            continue
        sys.exit(f"values {bad} were accepted; values.schema.json must refuse them")
    print("schema: bad values refused, naming the field")


def check_secure_store():
    """By default etcd speaks only TLS and asks every client for a certificate, and
    NetworkPolicies admit only Baton's parts to it."""
    docs = [doc for _, doc in documents(render({}))]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    problems = []
    etcd = by[("StatefulSet", f"{RELEASE}-etcd")]["spec"]["template"]["spec"]["containers"][0]
    args = etcd["command"] + etcd["args"]
    for flag in ("--client-cert-auth=true", "--peer-client-cert-auth=true", "--trusted-ca-file=/etc/etcd/tls/ca.crt",
                 "--peer-trusted-ca-file=/etc/etcd/tls/ca.crt", "--listen-client-urls=https://0.0.0.0:2379",
                 "--listen-peer-urls=https://0.0.0.0:2380"):
        if flag not in args:
            problems.append(f"etcd runs without {flag}")
    if any(a.startswith("--listen-client-urls=http:") for a in args):
        problems.append("etcd takes plain HTTP clients")
    policy = by.get(("NetworkPolicy", f"{RELEASE}-etcd"))
    if not policy:
        problems.append("no NetworkPolicy for etcd")
    else:
        def components(rule):
            return sorted(p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "?")
                          for p in rule.get("from", []) if "podSelector" in p)
        rules = policy["spec"]["ingress"]
        peers = [r for r in rules if {"port": 2380, "protocol": "TCP"} in r["ports"]]
        if [components(r) for r in peers] != [["etcd"]]:
            problems.append(f"etcd's peer port is open to more than its members: {peers}")
        clients = [components(r) for r in rules if {"port": 2379, "protocol": "TCP"} in r["ports"] and r.get("from")]
        if ["apiserver", "controller", "registrar", "views"] not in clients:
            problems.append(f"etcd's client port does not admit exactly Baton's parts: {clients}")
    if ("NetworkPolicy", f"{RELEASE}-controller") not in by:
        problems.append("no NetworkPolicy for the controllers")
    if problems:
        sys.exit("store: " + "; ".join(problems))
    print("store: etcd speaks TLS to clients and peers and asks each for a certificate; NetworkPolicies admit only Baton's parts")


def agent_daemonset(values):
    for _, doc in documents(render(values)):
        if doc["kind"] == "DaemonSet":
            return doc
    sys.exit("no agent DaemonSet rendered")


def check_agent_isolation():
    """Instances live in the node's cgroups and pid namespace, so they outlive the agent's pod."""
    pod = agent_daemonset({})["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    problems = []
    if not pod.get("hostPID"):
        problems.append("hostPID is not set: instances would die with the agent's pid namespace")
    if "--cgroup-root=/host/sys/fs/cgroup" not in args or mounts.get("cgroup") != "/host/sys/fs/cgroup":
        problems.append("the node's /sys/fs/cgroup is not the agent's --cgroup-root")
    if volumes.get("cgroup") != "/sys/fs/cgroup":
        problems.append("the cgroup volume is not the node's /sys/fs/cgroup")
    if not container["securityContext"].get("privileged"):
        problems.append("the agent is not privileged: it cannot manage the node's cgroups")
    off = agent_daemonset({"agent": {"cgroups": {"mode": "off"}}})["spec"]["template"]["spec"]
    off_container = off["containers"][0]
    if off_container["securityContext"].get("privileged") or "cgroup" in {v["name"] for v in off["volumes"]}:
        problems.append("with agent.cgroups.mode off the agent is still privileged or mounts the cgroups")
    if "--cgroups=off" not in off_container["args"]:
        problems.append("agent.cgroups.mode off does not reach the agent")
    if problems:
        sys.exit("agent isolation: " + "; ".join(problems))
    print("agent: instances in the node's cgroups and pid namespace (hostPID, privileged); unprivileged when off")


def check_agent_identities():
    """By default each agent joins for a store identity of its own and never holds Baton's."""
    def rendered(values):
        docs = [doc for _, doc in documents(render(values))]
        by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        agent = by[("DaemonSet", f"{RELEASE}-agent")]["spec"]["template"]["spec"]
        return by, agent
    by, agent = rendered({})
    args = agent["containers"][0]["args"]
    etcd_tls = next(v for v in agent["volumes"] if v["name"] == "etcd-tls")
    problems = []
    if f"--join=https://{RELEASE}-registrar.{NAMESPACE}.svc:8443" not in args:
        problems.append(f"the agent does not join through the registrar: {args}")
    if any(a.startswith("--store-cert-file") or a.startswith("--store-key-file") for a in args):
        problems.append("the agent is given a store certificate of its own to share")
    if etcd_tls["secret"].get("items") != [{"key": "ca.crt", "path": "ca.crt"}]:
        problems.append(f"the agent mounts more of the etcd client Secret than its CA: {etcd_tls}")
    registrar = by.get(("Deployment", f"{RELEASE}-registrar"))
    if not registrar:
        problems.append("no registrar Deployment")
    else:
        registrar_args = registrar["spec"]["template"]["spec"]["containers"][0]["args"]
        if "--enable-store-auth" not in registrar_args:
            problems.append("the registrar does not turn etcd's authentication on")
    for kind, name in [("Secret", f"{RELEASE}-etcd-ca"), ("Secret", f"{RELEASE}-agent-join"),
                       ("Service", f"{RELEASE}-registrar"), ("NetworkPolicy", f"{RELEASE}-registrar")]:
        if (kind, name) not in by:
            problems.append(f"no {kind} {name}")
    by, _ = rendered({"apiserver": {"enabled": True}})
    for component in ("controller", "apiserver"):
        pod = by[("Deployment", f"{RELEASE}-{component}")]["spec"]["template"]["spec"]
        secret = next(v for v in pod["volumes"] if v["name"] == "etcd-tls")["secret"]["secretName"]
        if secret != f"{RELEASE}-etcd-{component}" or ("Secret", secret) not in by:
            problems.append(f"the {component} does not show etcd a certificate of its own: {secret}")
    by, agent = rendered({"agent": {"storeIdentity": "shared"}})
    if ("Deployment", f"{RELEASE}-registrar") in by or any(a.startswith("--join") for a in agent["containers"][0]["args"]):
        problems.append("agent.storeIdentity shared still joins")
    try:
        render({"etcd": {"enabled": False, "external": {"endpoints": ["etcd:2379"], "tls": {"enabled": True, "secretName": "s"}}},
                "agent": {"storeIdentity": "join"}})
        problems.append("agent.storeIdentity join without etcd's CA was accepted")
    except helm_python.HelmError as e:
        if "registrar.caSecretName" not in str(e):
            problems.append(f"join without etcd's CA is refused without naming registrar.caSecretName: {e}")
    if problems:
        sys.exit("agent identities: " + "; ".join(problems))
    print("identities: each agent joins for its own (the registrar turns etcd's authentication on; shared when asked);"
          " the controllers and API servers each have theirs")


def check_views():
    """kubectl get instances on the Kubernetes API: an APIService for Baton's views server."""
    docs = [doc for _, doc in documents(render({}))]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    problems = []
    api_service = by.get(("APIService", "v1alpha1.views.baton.dev"))
    deployment = by.get(("Deployment", f"{RELEASE}-views"))
    service = by.get(("Service", f"{RELEASE}-views"))
    secret = by.get(("Secret", f"{RELEASE}-views-tls"))
    if not (api_service and deployment and service and secret):
        sys.exit("views: the default install has no APIService, views Deployment, Service and certificate")
    spec = api_service["spec"]
    if spec["group"] != "views.baton.dev" or spec["service"] != {"name": f"{RELEASE}-views", "namespace": NAMESPACE, "port": 443}:
        problems.append(f"the APIService does not send views.baton.dev to the views Service: {spec}")
    if spec.get("caBundle") != secret["data"]["ca.crt"] or spec.get("insecureSkipTLSVerify"):
        problems.append("the APIService does not check the views server's certificate against its CA")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for flag in ("--aggregated-views", "--requestheader-from-kubernetes", "--authorize-with-kubernetes"):
        if flag not in container["args"]:
            problems.append(f"the views server runs without {flag}")
    target = service["spec"]["ports"][0]["targetPort"]
    if target not in [p["name"] for p in container["ports"]]:
        problems.append(f"the views Service targets {target}, which the pod does not name")
    bindings = {(d["kind"], d["roleRef"]["name"]) for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    for needed in [("ClusterRoleBinding", "system:auth-delegator"), ("RoleBinding", "extension-apiserver-authentication-reader")]:
        if needed not in bindings:
            problems.append(f"the views server's service account lacks {needed[1]}")
    view = by[("ClusterRole", f"{RELEASE}-view")]
    if not any("views.baton.dev" in r["apiGroups"] and "instances" in r["resources"] for r in view["rules"]):
        problems.append("the view role does not read instances")
    if ("APIService", "v1alpha1.views.baton.dev") in {(d["kind"], d["metadata"]["name"]) for _, d in documents(render({"aggregation": {"enabled": False}}))}:
        problems.append("aggregation.enabled false still registers the APIService")
    if problems:
        sys.exit("views: " + "; ".join(problems))
    print("views: an APIService sends views.baton.dev to Baton's views server (certificate checked, Kubernetes' RBAC decides)")


def check_dns():
    """With Baton's API server, its pods answer DNS on a Service's port 53, UDP and TCP."""
    def rendered(values):
        docs = [doc for _, doc in documents(render(values))]
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        apiserver = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-apiserver")]
        return services, apiserver[0]["spec"]["template"]["spec"]["containers"][0]["args"] if apiserver else []
    services, args = rendered({"apiserver": {"enabled": True}})
    dns = services.get(f"{RELEASE}-apiserver-dns")
    problems = []
    if not dns:
        problems.append("no DNS Service with the API server enabled")
    elif sorted((p["port"], p["protocol"]) for p in dns["spec"]["ports"]) != [(53, "TCP"), (53, "UDP")]:
        problems.append(f"the DNS Service does not serve port 53 over UDP and TCP: {dns['spec']['ports']}")
    if "--dns-listen=0.0.0.0:5353" not in args or "--cluster-domain=baton.local" not in args:
        problems.append(f"the API server is not asked to answer DNS: {args}")
    services, args = rendered({"apiserver": {"enabled": True, "dns": {"enabled": False}}})
    if f"{RELEASE}-apiserver-dns" in services or any(a.startswith("--dns-listen") for a in args):
        problems.append("apiserver.dns.enabled false still serves DNS")
    if problems:
        sys.exit("dns: " + "; ".join(problems))
    print("dns: the API server's pods answer on the DNS Service (53, UDP and TCP); off when disabled")


def processes(values_json):
    """One render: each container's command and args, and each Secret's data and stringData."""
    values = json.loads(values_json) if values_json else {}
    out = {"containers": {}, "secrets": {}}
    for path, doc in documents(render(values)):
        if doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                out["containers"][container["name"]] = container["command"] + container["args"]
        elif doc.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            out["secrets"][doc["metadata"]["name"]] = {**data, **doc.get("stringData", {})}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "check":
        check()
    elif len(sys.argv) in (2, 3) and sys.argv[1] == "processes":
        processes(sys.argv[2] if len(sys.argv) == 3 else "")
    else:
        sys.exit(__doc__)
