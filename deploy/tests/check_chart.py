#!/usr/bin/env python3
"""Checks the rendered Helm chart (output of `helm template`) against what ops rely on.

Usage: check_chart.py [--production] [--all-secrets] RENDERED.yaml

For every service (auth, accounts, transfers, webhooks, mailer, edge-gateway): a Deployment whose container
has liveness and readiness probes (gRPC for the gRPC services, whose health follows their /readyz
checks; HTTP on /healthz and /readyz for the mailer; for the gateway HTTP /healthz on its private
admin port and gRPC readiness), resource requests and limits for CPU and memory, a non-root pod and
container securityContext with a read-only root filesystem, no privilege escalation and every
capability dropped; a Service, an HPA scaling that Deployment, a PDB and a NetworkPolicy selecting
its pods. Plus: the migration runs as a pre-install/pre-upgrade hook Job, the gateway's upstreams
point at the rendered Services, and with --production the HTTP and gRPC ingresses (GRPC backend
protocol, TLS through cert-manager) reach the gateway, secrets come from existing Secrets and the
ServiceAccount carries an IAM role.

Secrets the services need, wherever they are configured: every token verifier (accounts,
transfers, webhooks) follows the revoked-session stream in the Redis auth uses, under the same key
prefix; the gateway secret (server.gateway_secret), when given, reaches the gateway and every gRPC
service from one Secret key; a read replica URL (database.read_url), when given, reaches accounts
and transfers only. --all-secrets (the inline rendering, which sets every optional secret) and
--production require the gateway secret; --all-secrets requires the read URL too.

Prints one line per failed check and closes with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import yaml

GRPC_SERVICES = {
    "auth": 50051,
    "accounts": 50052,
    "transfers": 50053,
    "webhooks": 50054,
}
HTTP_PROBED = {"mailer": 8084, "edge-gateway": 8080}
# The gateway's /metrics, /readyz and /healthz: a port of their own, never public.
GATEWAY_ADMIN = 8085
GATEWAY_GRPC = 9090
SERVICES = [*GRPC_SERVICES, *HTTP_PROBED]
COMPONENT = "app.kubernetes.io/component"


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL {what}")
        return ok


def load(path: str) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                by_kind[doc["kind"]].append(doc)
    return by_kind


def selects(selector: dict, labels: dict) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def one(items: list[dict], pred) -> dict | None:
    found = [i for i in items if pred(i)]
    return found[0] if len(found) == 1 else None


def check_deployment(c: Checker, name: str, dep: dict) -> None:
    spec = dep["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext") or {}
    c.check(pod_sc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    c.check((pod_sc.get("runAsUser") or 0) > 0, f"{name}: pod runAsUser is not root")
    c.check(
        (pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
        f"{name}: pod seccompProfile RuntimeDefault",
    )
    c.check(spec.get("automountServiceAccountToken") is False, f"{name}: no API token mounted")
    containers = spec.get("containers") or []
    if not c.check(len(containers) == 1, f"{name}: exactly one container"):
        return
    ctr = containers[0]
    c.check(":" in ctr.get("image", "") and not ctr["image"].endswith(":latest"),
            f"{name}: image has an explicit, non-latest tag")
    sc = ctr.get("securityContext") or {}
    c.check(sc.get("runAsNonRoot") is True, f"{name}: container runAsNonRoot")
    c.check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    c.check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation=false")
    c.check(sc.get("privileged") in (None, False), f"{name}: not privileged")
    c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{name}: drops ALL capabilities")

    res = ctr.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.check(bool((res.get(kind) or {}).get(r)), f"{name}: resources.{kind}.{r} set")

    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports") or []}
    live, ready = ctr.get("livenessProbe"), ctr.get("readinessProbe")
    c.check(bool(live), f"{name}: livenessProbe")
    c.check(bool(ready), f"{name}: readinessProbe")
    if name in GRPC_SERVICES:
        port = GRPC_SERVICES[name]
        c.check(ports.get("grpc") == port, f"{name}: grpc port {port}")
        for kind, probe in (("liveness", live), ("readiness", ready)):
            c.check(
                bool(probe) and (probe.get("grpc") or {}).get("port") == port,
                f"{name}: {kind} probe is gRPC on {port}",
            )
    elif name == "edge-gateway":
        c.check(ports.get("http") == HTTP_PROBED[name], f"{name}: http port {HTTP_PROBED[name]}")
        c.check(ports.get("admin") == GATEWAY_ADMIN, f"{name}: admin port {GATEWAY_ADMIN}")
        get = (live or {}).get("httpGet") or {}
        c.check(get.get("path") == "/healthz" and get.get("port") in ("admin", GATEWAY_ADMIN),
                f"{name}: liveness probe is HTTP GET /healthz on the admin port")
        c.check((ready or {}).get("grpc", {}).get("port") == GATEWAY_GRPC,
                f"{name}: readiness probe is gRPC health on {GATEWAY_GRPC}")
        env = {e["name"]: e.get("value") for e in ctr.get("env") or []}
        c.check(env.get("EDGE_GATEWAY_ADMIN_ADDR") == f"0.0.0.0:{GATEWAY_ADMIN}",
                f"{name}: EDGE_GATEWAY_ADMIN_ADDR set to the admin port")
    else:
        port = HTTP_PROBED[name]
        c.check(ports.get("http") == port, f"{name}: http port {port}")
        for kind, probe, path in (("liveness", live, "/healthz"), ("readiness", ready, "/readyz")):
            get = (probe or {}).get("httpGet") or {}
            c.check(
                get.get("path") == path and get.get("port") in ("http", port),
                f"{name}: {kind} probe is HTTP GET {path}",
            )


def secret_refs(dep: dict) -> dict[str, tuple[str, str] | None]:
    """Env var name → (Secret, key) of its secretKeyRef (None for a plain value)."""
    refs = {}
    for ctr in dep["spec"]["template"]["spec"]["containers"]:
        for e in ctr.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            refs[e["name"]] = (ref["name"], ref["key"]) if ref else None
    return refs


def check_secrets(c: Checker, k: dict[str, list[dict]], production: bool, all_secrets: bool) -> None:
    by_comp = {d["metadata"]["labels"].get(COMPONENT): secret_refs(d) for d in k["Deployment"]}
    # revoked sessions: where auth's relay writes them (its redis.*), under the same prefix
    auth_redis = by_comp.get("auth", {}).get("TXN_REDIS__URL")
    if auth_redis or production or all_secrets:
        c.check(auth_redis is not None, "auth: TXN_REDIS__URL from a Secret")
        for comp in ("accounts", "transfers", "webhooks"):
            c.check(by_comp.get(comp, {}).get("TXN_TOKEN__REVOCATIONS__REDIS__URL") == auth_redis,
                    f"{comp}: follows revoked sessions in auth's Redis (TXN_TOKEN__REVOCATIONS__REDIS__URL)")
        shared = one(k["ConfigMap"], lambda m: m["metadata"]["name"].endswith("-config")) or {}
        data = shared.get("data") or {}
        c.check(data.get("TXN_TOKEN__REVOCATIONS__REDIS__KEY_PREFIX") == data.get("TXN_REDIS__KEY_PREFIX"),
                "the revoked-session stream is read under auth's Redis key prefix")
    # the gateway secret: all of them or none
    gateway_side = [*GRPC_SERVICES, "edge-gateway"]
    secrets = {comp: by_comp.get(comp, {}).get("TXN_SERVER__GATEWAY_SECRET") for comp in gateway_side}
    if any(secrets.values()) or production or all_secrets:
        c.check(all(secrets.values()) and len(set(secrets.values())) == 1,
                f"the gateway and every gRPC service get one TXN_SERVER__GATEWAY_SECRET from a Secret ({secrets})")
    c.check("TXN_SERVER__GATEWAY_SECRET" not in by_comp.get("mailer", {}), "mailer: no gateway secret (no gRPC port)")
    # the read replica: accounts and transfers only
    reads = {comp: refs.get(f"{comp.upper().replace('-', '_')}_DATABASE__READ_URL")
             for comp, refs in by_comp.items()}
    if any(reads.values()) or all_secrets:
        c.check(all(reads.get(comp) for comp in ("accounts", "transfers")),
                "accounts and transfers: *_DATABASE__READ_URL from a Secret")
    others = [comp for comp, refs in by_comp.items() if comp not in ("accounts", "transfers")
              and any(n.endswith("DATABASE__READ_URL") for n in refs)]
    c.check(not others, f"no read replica URL beyond accounts and transfers ({others})")


def main(argv: list[str]) -> int:
    production = "--production" in argv
    files = [a for a in argv if not a.startswith("--")]
    if len(files) != 1:
        print(__doc__)
        return 2
    k = load(files[0])
    c = Checker()

    deployments = k["Deployment"]
    services = k["Service"]
    for name in SERVICES:
        dep = one(deployments, lambda d: d["metadata"]["labels"].get(COMPONENT) == name)
        if not c.check(dep is not None, f"{name}: one Deployment"):
            continue
        check_deployment(c, name, dep)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        dep_name = dep["metadata"]["name"]
        c.check(selects(dep["spec"]["selector"], pod_labels), f"{name}: Deployment selector matches its pods")

        svc = one(services, lambda s: s["spec"].get("selector") and all(
            pod_labels.get(key) == v for key, v in s["spec"]["selector"].items()))
        c.check(svc is not None, f"{name}: a Service selects its pods")

        hpa = one(k["HorizontalPodAutoscaler"], lambda h: h["spec"]["scaleTargetRef"]["name"] == dep_name)
        if c.check(hpa is not None, f"{name}: an HPA scales the Deployment"):
            c.check(
                hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
                and 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"],
                f"{name}: HPA min ≤ max",
            )
            c.check("replicas" not in dep["spec"], f"{name}: Deployment leaves replicas to the HPA")

        pdb = one(k["PodDisruptionBudget"], lambda p: selects(p["spec"]["selector"], pod_labels))
        c.check(pdb is not None, f"{name}: a PDB selects its pods")

        netpols = [n for n in k["NetworkPolicy"]
                   if selects(n["spec"]["podSelector"], pod_labels)
                   and (n["spec"]["podSelector"]["matchLabels"].get(COMPONENT) == name)]
        c.check(len(netpols) == 1, f"{name}: a NetworkPolicy of its own")

    # Key material: only auth gets the token's private key; no password travels as an env var.
    for dep in deployments:
        comp = dep["metadata"]["labels"].get(COMPONENT)
        spec = dep["spec"]["template"]["spec"]
        paths = {item.get("path") for v in spec.get("volumes") or []
                 for item in (v.get("secret") or {}).get("items") or []}
        if comp != "auth":
            c.check("private-key" not in paths, f"{comp}: no token private key mounted")
        env_names = {e["name"] for ctr in spec["containers"] for e in ctr.get("env") or []}
        c.check(not any(n.endswith("PASSWORD") for n in env_names), f"{comp}: no password in env")
    if production:
        auth = one(deployments, lambda d: d["metadata"]["labels"].get(COMPONENT) == "auth")
        paths = {item.get("path") for v in (auth or {}).get("spec", {}).get("template", {}).get("spec", {})
                 .get("volumes", []) for item in (v.get("secret") or {}).get("items") or []}
        c.check({"public-key", "private-key"} <= paths, "production: auth mounts both token keys")

    # Only the gateway may be reached from outside the release: every other service's policy
    # admits its gRPC port only from pods of this release.
    for pol in k["NetworkPolicy"]:
        comp = pol["spec"]["podSelector"]["matchLabels"].get(COMPONENT)
        if comp in (None, "edge-gateway"):
            continue
        for rule in pol["spec"].get("ingress") or []:
            ports = {p.get("port") for p in rule.get("ports") or []}
            if "grpc" in ports:
                c.check(bool(rule.get("from")) and all("podSelector" in f and "namespaceSelector" not in f
                                                      for f in rule["from"]),
                        f"{comp}: gRPC port admits only pods of the release")

    # The gateway's public rule (the one without metricsFrom's peers) never admits the admin port.
    gw_pol = one(k["NetworkPolicy"], lambda n: n["spec"]["podSelector"]["matchLabels"].get(COMPONENT) == "edge-gateway")
    if c.check(gw_pol is not None, "edge-gateway: a NetworkPolicy"):
        rules = gw_pol["spec"].get("ingress") or []
        public = [r for r in rules if {"grpc", "http"} <= {p.get("port") for p in r.get("ports") or []}]
        c.check(len(public) == 1 and "admin" not in {p.get("port") for p in public[0]["ports"]},
                "edge-gateway: the public ports' rule does not admit the admin port")
        for r in rules:
            if "admin" in {p.get("port") for p in r.get("ports") or []}:
                c.check(bool(r.get("from")), "edge-gateway: the admin port only from networkPolicy.metricsFrom")
    # Scrapes: the gateway's /metrics on its admin port, everyone else's on http.
    for sm in k["ServiceMonitor"]:
        comp = sm["metadata"]["labels"].get(COMPONENT)
        want = "admin" if comp == "edge-gateway" else "http"
        c.check([e.get("port") for e in sm["spec"]["endpoints"]] == [want],
                f"{comp}: ServiceMonitor scrapes port {want}")

    # The default deny policy covers every pod of the release.
    deny = [n for n in k["NetworkPolicy"] if COMPONENT not in n["spec"]["podSelector"].get("matchLabels", {})]
    c.check(len(deny) == 1 and deny[0]["spec"].get("ingress") in (None, []), "a default-deny ingress policy")

    # The gateway's upstreams are the rendered Services.
    svc_ports = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in services}
    gw_cm = one(k["ConfigMap"], lambda m: m["metadata"]["labels"].get(COMPONENT) == "edge-gateway")
    if c.check(gw_cm is not None, "edge-gateway: a ConfigMap of its own"):
        for up in GRPC_SERVICES:
            url = (gw_cm.get("data") or {}).get(f"EDGE_GATEWAY_UPSTREAMS__{up.upper()}", "")
            host, _, port = url.removeprefix("http://").partition(":")
            c.check(host in svc_ports and port.isdigit() and int(port) in svc_ports[host],
                    f"edge-gateway: upstream {up} ({url}) is a rendered Service port")

    # Migrations run as a hook before install and upgrade.
    job = one(k["Job"], lambda j: j["metadata"]["labels"].get(COMPONENT) == "migrate")
    if c.check(job is not None, "migrate: a Job"):
        hooks = (job["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        c.check({"pre-install", "pre-upgrade"} <= set(hooks.split(",")), "migrate: pre-install,pre-upgrade hook")
        ctr = job["spec"]["template"]["spec"]["containers"][0]
        c.check(ctr.get("args") == ["up"], "migrate: runs `migrate up`")
        sc = ctr.get("securityContext") or {}
        c.check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
                "migrate: locked-down container")

    # Gateway API routes (when rendered) reach the gateway's public ports, never its admin port.
    gw_svc = one(services, lambda s: s["metadata"]["labels"].get(COMPONENT) == "edge-gateway")
    for kind, port in (("HTTPRoute", 8080), ("GRPCRoute", GATEWAY_GRPC)):
        for route in k[kind]:
            refs = [b for r in route["spec"]["rules"] for b in r.get("backendRefs") or []]
            c.check(bool(route["spec"].get("parentRefs")) and bool(refs) and bool(gw_svc)
                    and all(b["name"] == gw_svc["metadata"]["name"] and b["port"] == port for b in refs),
                    f"{kind} {route['metadata']['name']}: attached to a Gateway, reaches the gateway on {port}")

    c.check(len(k["ServiceAccount"]) >= 1, "a ServiceAccount")
    c.check(bool(k["ConfigMap"]), "a ConfigMap of settings")

    if production:
        sa = one(k["ServiceAccount"], lambda s: s["metadata"]["labels"].get(COMPONENT) is None)
        c.check(sa is not None and "eks.amazonaws.com/role-arn" in (sa["metadata"].get("annotations") or {}),
                "production: ServiceAccount has an IRSA role annotation")
        gw = one(services, lambda s: s["metadata"]["labels"].get(COMPONENT) == "edge-gateway")
        ingresses = k["Ingress"]
        c.check(len(ingresses) == 2, "production: an HTTP and a gRPC Ingress")
        for ing in ingresses:
            ann = ing["metadata"].get("annotations") or {}
            backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
            grpc = ann.get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
            want_port = 9090 if grpc else 8080
            c.check(bool(gw) and all(b["name"] == gw["metadata"]["name"] and b["port"]["number"] == want_port
                                     for b in backends),
                    f"production: Ingress {ing['metadata']['name']} reaches the gateway on {want_port}")
            c.check(bool(ing["spec"].get("tls")) and "cert-manager.io/cluster-issuer" in ann,
                    f"production: Ingress {ing['metadata']['name']} has cert-manager TLS")
        c.check(any(ann.get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
                    for ann in (i["metadata"].get("annotations") or {} for i in ingresses)),
                "production: the gRPC Ingress uses backend-protocol GRPC")
        c.check(not k["Secret"] or all(s["metadata"]["labels"].get(COMPONENT) == "migrate" for s in k["Secret"]),
                "production: no chart-made Secret (existing Secrets only)")
        # every existing Secret is filled by an ExternalSecret, made before the migration hook
        named = {d.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                 for dep in [*deployments, *k["Job"]] for ctr in dep["spec"]["template"]["spec"]["containers"]
                 for d in ctr.get("env") or []} | {
                 v["secret"]["secretName"] for dep in deployments
                 for v in dep["spec"]["template"]["spec"].get("volumes") or [] if "secret" in v}
        named.discard(None)
        targets = {e["spec"]["target"]["name"] for e in k["ExternalSecret"]}
        c.check(bool(named) and named <= targets, f"production: an ExternalSecret fills each Secret read ({sorted(named - targets)} missing)")
        c.check(all("pre-install" in (e["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
                    and e["spec"]["target"].get("creationPolicy") == "Orphan" for e in k["ExternalSecret"]),
                "production: ExternalSecrets are pre-install hooks whose Secrets outlive them")
        c.check(not k["ClusterSecretStore"], "production: no ClusterSecretStore in the app release")
        # cluster-wide objects belong to the platform bootstrap (deploy/platform), not the release
        c.check(not k["ClusterIssuer"], "production: no ClusterIssuer in the app release")
        # Prometheus Operator scrapes what the ServiceMonitors name; annotations are off
        sms = k["ServiceMonitor"]
        c.check({sm["metadata"]["labels"].get(COMPONENT) for sm in sms} == set(SERVICES),
                "production: a ServiceMonitor per service")
        c.check(all((sm["metadata"]["labels"] or {}).get("release") for sm in sms),
                "production: ServiceMonitors carry the label Prometheus selects them by")
        c.check(not any("prometheus.io/scrape" in (d["spec"]["template"]["metadata"].get("annotations") or {})
                        for d in deployments), "production: no prometheus.io annotations")
        # the dashboard for Grafana's sidecar: the same JSON as deploy/grafana
        dash = one(k["ConfigMap"], lambda m: (m["metadata"].get("labels") or {}).get("grafana_dashboard") == "1")
        if c.check(dash is not None, "production: the Grafana dashboard ConfigMap"):
            import json
            with open("deploy/grafana/transactions-api.json", encoding="utf-8") as f:
                want = json.load(f)
            got = json.loads(next(iter(dash["data"].values())))
            c.check(got == want, "production: the dashboard ConfigMap holds deploy/grafana/transactions-api.json")
        # TLS to RDS: verify-full with the CA bundle mounted, for every database user and migrate
        for comp in ("auth", "accounts", "transfers", "migrate"):
            pod = (one(deployments, lambda d: d["metadata"]["labels"].get(COMPONENT) == comp)
                   or one(k["Job"], lambda j: j["metadata"]["labels"].get(COMPONENT) == comp))
            spec = (pod or {}).get("spec", {}).get("template", {}).get("spec", {})
            ctr = (spec.get("containers") or [{}])[0]
            env = {e["name"]: e.get("value") for e in ctr.get("env") or []}
            mounts = {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts") or []}
            c.check(env.get("TXN_DATABASE__SSL_MODE") == "verify-full"
                    and env.get("TXN_DATABASE__SSL_ROOT_CERT") == "/etc/txn/ca/ca.pem"
                    and mounts.get("/etc/txn/ca") == "database-ca",
                    f"production: {comp} verifies the database's certificate (verify-full, CA mounted)")
        # the client IP: X-Forwarded-For believed only from the ingress pods' subnets
        gw_cm = one(k["ConfigMap"], lambda m: m["metadata"]["labels"].get(COMPONENT) == "edge-gateway")
        import ipaddress
        import json as _json
        proxies = _json.loads(((gw_cm or {}).get("data") or {}).get("EDGE_GATEWAY_TRUSTED_PROXIES", "[]"))
        c.check(bool(proxies) and all(ipaddress.ip_network(p).prefixlen >= 22 for p in proxies),
                f"production: trusted_proxies are the ingress subnets, not the VPC ({proxies})")
        gw_pol = one(k["NetworkPolicy"], lambda n: n["spec"]["podSelector"]["matchLabels"].get(COMPONENT) == "edge-gateway")
        public = [r for r in (gw_pol or {}).get("spec", {}).get("ingress") or []
                  if "grpc" in {p.get("port") for p in r.get("ports") or []}]
        c.check(len(public) == 1 and bool(public[0].get("from"))
                and all("namespaceSelector" in f and "podSelector" in f for f in public[0]["from"]),
                "production: only the ingress controller's pods reach the gateway's public ports")

    check_secrets(c, k, production, "--all-secrets" in argv)

    failed = len(c.failed)
    print(f"chart {'production' if production else 'default'} values: {c.passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
