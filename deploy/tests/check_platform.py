#!/usr/bin/env python3
"""Checks what the platform team installs beside the chart (not rendered by it):

- deploy/platform/cluster-issuer.yaml: one cert-manager ClusterIssuer, ACME, the name the
  production values' ingresses ask for (ingress.tls.clusterIssuer);
- deploy/ingress-nginx/values-eks.yaml: the client IP survives the NLB (proxy protocol on both the
  NLB annotation and the controller, client X-Forwarded-For not believed, externalTrafficPolicy
  Local) and the controller runs only on the `ingress` node group, whose subnets are the gateway's
  trusted_proxies.

Prints one line per failed check and closes with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import sys

import yaml

CHART = "helm/transactions-api"


def main() -> int:
    passed, failed = 0, []

    def check(ok: bool, what: str) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)
            print(f"FAIL {what}")

    with open(f"{CHART}/values-production.yaml", encoding="utf-8") as f:
        prod = yaml.safe_load(f)
    with open("deploy/platform/cluster-issuer.yaml", encoding="utf-8") as f:
        issuers = [d for d in yaml.safe_load_all(f) if d]
    check(len(issuers) == 1 and issuers[0]["kind"] == "ClusterIssuer"
          and issuers[0]["apiVersion"] == "cert-manager.io/v1", "cluster-issuer.yaml: one cert-manager ClusterIssuer")
    issuer = issuers[0] if issuers else {}
    check(issuer.get("metadata", {}).get("name") == prod["ingress"]["tls"]["clusterIssuer"],
          "cluster-issuer.yaml: the issuer the production ingresses name")
    acme = issuer.get("spec", {}).get("acme", {})
    check(acme.get("server", "").startswith("https://") and bool(acme.get("solvers")),
          "cluster-issuer.yaml: an ACME server and a solver")
    check(prod["certManager"]["clusterIssuer"]["create"] is False,
          "production values: the release does not create the ClusterIssuer")

    with open("deploy/ingress-nginx/values-eks.yaml", encoding="utf-8") as f:
        nginx = yaml.safe_load(f)["controller"]
    ann = nginx["service"].get("annotations") or {}
    cfg = nginx.get("config") or {}
    check(ann.get("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol") == "*"
          and cfg.get("use-proxy-protocol") == "true",
          "ingress-nginx: proxy protocol on the NLB and in the controller (both or neither)")
    check(cfg.get("use-forwarded-headers") == "false", "ingress-nginx: a client's X-Forwarded-For is not believed")
    check(nginx["service"].get("externalTrafficPolicy") == "Local", "ingress-nginx: externalTrafficPolicy Local")
    check((nginx.get("nodeSelector") or {}).get("transactions-api/role") == "ingress",
          "ingress-nginx: runs on the ingress node group (the trusted_proxies subnets)")

    print(f"platform files: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
