#!/usr/bin/env python3
"""Checks the compose file and the Dockerfile against what `docker compose up` relies on.

Usage: check_compose.py CONFIG.json
  CONFIG.json: `docker-compose -f docker-compose.yml --profile observability config --format json`

- Only the gateway (8080, 9090), the mail inbox (8025) and, in the observability profile, Jaeger's
  UI (16686) and Grafana (3000) are published, and only on 127.0.0.1.
- The observability profile's Prometheus scrapes every service's /metrics under a job named after
  the service (what the dashboard filters on), and Grafana provisions it as a data source and loads
  deploy/grafana/transactions-api.json.
- keygen and migrate are one-shots; every service that needs them waits for
  service_completed_successfully (the mailer for migrate too: its recipients table); every
  long-running service has a health check, and the gateway waits for auth, accounts and transfers
  to be healthy.
- Every service that verifies tokens (accounts, transfers, webhooks) follows the revoked-session
  stream in auth's Redis and waits for Redis; the gateway and every gRPC service share one
  non-empty server.gateway_secret; accounts and transfers pass database.read_url through from the
  shell (unset unless set there).
- The five services run read-only, without capabilities and with no-new-privileges.
- Every build target exists as a stage of deploy/docker/Dockerfile, and every binary the builder
  copies out is a package of the Cargo workspace.

Prints one line per failed check and closes with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import glob
import json
import re
import sys
import tomllib

APP = ["auth", "accounts", "transfers", "mailer", "webhooks", "edge-gateway"]
ONE_SHOTS = ["keygen", "migrate"]
PUBLISHED = {"edge-gateway": {8080, 9090}, "mailpit": {8025}, "jaeger": {16686}, "grafana": {3000}}
# Where each service's /metrics is (the gateway's on its admin port): what Prometheus must scrape.
METRICS = {"auth": 8081, "accounts": 8082, "transfers": 8083, "mailer": 8084, "webhooks": 8086, "edge-gateway": 8085}
DOCKERFILE = "deploy/docker/Dockerfile"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        services = json.load(f)["services"]
    passed, failed = 0, []

    def check(ok: bool, what: str) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)
            print(f"FAIL {what}")

    for name, svc in services.items():
        ports = svc.get("ports") or []
        published = {int(p["published"]) for p in ports if p.get("published")}
        check(published <= PUBLISHED.get(name, set()), f"{name}: publishes only what it should ({sorted(published)})")
        for p in ports:
            if p.get("published"):
                check(p.get("host_ip") == "127.0.0.1", f"{name}: port {p['published']} bound to 127.0.0.1")
    for name, want in PUBLISHED.items():
        got = {int(p["published"]) for p in (services.get(name, {}).get("ports") or []) if p.get("published")}
        check(got == want, f"{name}: publishes {sorted(want)}")

    for name in ["postgres", "redis", "mailpit", *APP]:
        svc = services.get(name)
        if not svc:
            check(False, f"{name}: present")
            continue
        hc = svc.get("healthcheck") or {}
        check(bool(hc.get("test")) and not hc.get("disable"), f"{name}: has a health check")

    for name in ONE_SHOTS:
        check(name in services and services[name].get("restart") in (None, "no"), f"{name}: a one-shot")

    def waits(name: str, dep: str, condition: str) -> bool:
        return ((services.get(name, {}).get("depends_on") or {}).get(dep) or {}).get("condition") == condition

    for name in ["auth", "accounts", "transfers", "webhooks"]:
        check(waits(name, "migrate", "service_completed_successfully"), f"{name}: waits for migrate")
        check(waits(name, "keygen", "service_completed_successfully"), f"{name}: waits for keygen")
        check(waits("edge-gateway", name, "service_healthy"), f"edge-gateway: waits for {name} healthy")
    check(waits("mailer", "migrate", "service_completed_successfully"), "mailer: waits for migrate")
    check(waits("migrate", "postgres", "service_healthy"), "migrate: waits for postgres healthy")
    check(waits("auth", "redis", "service_healthy"), "auth: waits for redis healthy")
    check(waits("mailer", "redis", "service_healthy"), "mailer: waits for redis healthy")
    check(waits("mailer", "mailpit", "service_healthy"), "mailer: waits for mailpit healthy")

    for name in APP:
        svc = services.get(name, {})
        check(svc.get("read_only") is True, f"{name}: read-only root filesystem")
        check("ALL" in (svc.get("cap_drop") or []), f"{name}: drops all capabilities")
        check("no-new-privileges:true" in (svc.get("security_opt") or []), f"{name}: no-new-privileges")
        env = svc.get("environment") or {}
        check(not any("PRIVATE_KEY" in k and k.endswith("KEY") for k in env), f"{name}: no inline private key")
    check((services.get("auth", {}).get("environment") or {}).get("AUTH_TOKEN__PRIVATE_KEY_FILE", "").startswith("/keys/"),
          "auth: reads the private key from the keys volume")
    env_of = {name: services.get(name, {}).get("environment") or {} for name in APP}
    auth_redis = env_of["auth"].get("AUTH_RELAY__REDIS__URL") or env_of["auth"].get("TXN_REDIS__URL")
    for name in ["accounts", "transfers", "webhooks"]:
        check(bool(auth_redis) and env_of[name].get("TXN_TOKEN__REVOCATIONS__REDIS__URL") == auth_redis,
              f"{name}: follows revoked sessions in auth's Redis ({auth_redis})")
        check(waits(name, "redis", "service_healthy"), f"{name}: waits for redis healthy")
    secrets = {name: env_of[name].get("TXN_SERVER__GATEWAY_SECRET") for name in APP if name != "mailer"}
    check(all(secrets.values()) and len(set(secrets.values())) == 1,
          f"the gateway and every gRPC service share one server.gateway_secret ({sorted(secrets)})")
    for name in ["accounts", "transfers"]:
        key = f"{name.upper()}_DATABASE__READ_URL"
        # without a value in the file: compose passes it only when the shell sets it
        check(key in env_of[name], f"{name}: {key} passed through from the shell")
    gw_test = " ".join((services.get("edge-gateway", {}).get("healthcheck") or {}).get("test") or [])
    check("127.0.0.1:8085/readyz" in gw_test, "edge-gateway: health check on its admin port's /readyz")
    gw_env = services.get("edge-gateway", {}).get("environment") or {}
    for up, port in (("AUTH", 50051), ("ACCOUNTS", 50052), ("TRANSFERS", 50053), ("WEBHOOKS", 50054)):
        check(gw_env.get(f"EDGE_GATEWAY_UPSTREAMS__{up}") == f"http://{up.lower()}:{port}",
              f"edge-gateway: upstream {up.lower()} is http://{up.lower()}:{port}")

    import yaml

    with open("deploy/compose/prometheus.yml", encoding="utf-8") as f:
        prom = yaml.safe_load(f)
    jobs = {j["job_name"]: [t for sc in j.get("static_configs") or [] for t in sc.get("targets") or []]
            for j in prom.get("scrape_configs") or []}
    for name, port in METRICS.items():
        check(jobs.get(name) == [f"{name}:{port}"], f"prometheus: job {name} scrapes {name}:{port}")
    graf = services.get("grafana", {})
    mounts = {v.get("target"): v.get("source", "") for v in graf.get("volumes") or []}
    check(mounts.get("/var/lib/grafana/dashboards", "").endswith("deploy/grafana"), "grafana: loads deploy/grafana")
    with open("deploy/compose/grafana/provisioning/datasources/prometheus.yaml", encoding="utf-8") as f:
        ds = yaml.safe_load(f)["datasources"]
    check(any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" for d in ds),
          "grafana: the compose Prometheus is a data source")
    check("prometheus.yml" in " ".join(v.get("source", "") for v in services.get("prometheus", {}).get("volumes") or []),
          "prometheus: reads deploy/compose/prometheus.yml")

    with open(DOCKERFILE, encoding="utf-8") as f:
        dockerfile = f.read()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.M | re.I))
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            check(build.get("target") in stages, f"{name}: build target {build.get('target')} is a Dockerfile stage")
    packages = set()
    for manifest in glob.glob("crates/*/Cargo.toml"):
        with open(manifest, "rb") as f:
            packages.add(tomllib.load(f)["package"]["name"])
    copied = re.search(r"for bin in ([^;]+);", dockerfile)
    bins = copied.group(1).split() if copied else []
    check(set(bins) == {*APP, "migrate"}, "Dockerfile: the builder copies the five services and migrate")
    for b in bins:
        check(b in packages, f"Dockerfile: {b} is a workspace package")
        check(b in stages, f"Dockerfile: {b} has its own target")

    print(f"compose and images: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
