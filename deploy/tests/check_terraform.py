#!/usr/bin/env python3
"""Structural checks of deploy/terraform, which cannot be `init`-ed or `validate`-d here (the
providers cannot be downloaded). Parses every .tf file (the `hcl2` module checkov brings) and
checks what the chart and the docs rely on:

- every file parses; every variable has a description and a type, every output a description;
  every `var.X` used is declared and every declared variable is used;
- RDS: TLS enforced by the parameter group (rds.force_ssl = 1) that the instance uses, storage
  encrypted, not public; ElastiCache: in-transit encryption required, an auth token, encrypted at
  rest; ECR: one repository per image of the Dockerfile, immutable tags, scan on push, a
  lifecycle policy each, a mutable build-cache repository;
- the GitHub OIDC provider and a deploy role that only this repository's environment can assume,
  with an EKS access entry limited to the release's namespace;
- IRSA roles for the External Secrets Operator and cert-manager;
- the Secrets Manager entries are the chart's externalSecrets.remoteKeys, and the ingress subnets
  are the gateway's trusted_proxies in values-production.yaml.

Prints one line per failed check and closes with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import glob
import json
import re
import sys

import hcl2
import yaml

TF = "deploy/terraform"
PROD = "helm/transactions-api/values-production.yaml"


def main() -> int:
    passed, failed = 0, []

    def check(ok: bool, what: str) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(what)
            print(f"FAIL {what}")

    resources: dict[tuple[str, str], dict] = {}
    variables: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    text = ""
    files = sorted(glob.glob(f"{TF}/*.tf"))
    check(bool(files), "deploy/terraform has .tf files")
    for path in files:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        text += source
        try:
            doc = hcl2.loads(source)
        except Exception as e:  # noqa: BLE001 - any parse error fails the check
            check(False, f"{path} parses ({e})")
            continue
        check(True, f"{path} parses")
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    resources[(rtype, name)] = body
        for block in doc.get("variable", []):
            variables.update(block)
        for block in doc.get("output", []):
            outputs.update(block)

    def val(body: dict, key: str):
        v = body.get(key)
        return v[0] if isinstance(v, list) and len(v) == 1 else v

    def of_type(rtype: str) -> dict[str, dict]:
        return {n: b for (t, n), b in resources.items() if t == rtype}

    for name, body in variables.items():
        check(bool(val(body, "description")) and "type" in body, f"variable {name}: description and type")
    for name, body in outputs.items():
        check(bool(val(body, "description")), f"output {name}: description")
    used = set(re.findall(r"\bvar\.([a-z0-9_]+)", text))
    check(used <= set(variables), f"every var.X used is declared ({sorted(used - set(variables))})")
    check(set(variables) <= used, f"every variable is used ({sorted(set(variables) - used)})")

    # RDS
    pgs = of_type("aws_db_parameter_group")
    force_ssl = [n for n, b in pgs.items()
                 if any(val(p, "name") == "rds.force_ssl" and str(val(p, "value")) == "1" for p in b.get("parameter", []))]
    check(bool(force_ssl), "RDS: a parameter group with rds.force_ssl = 1")
    dbs = of_type("aws_db_instance")
    check(len(dbs) == 1, "RDS: one instance")
    for name, db in dbs.items():
        check(any(f"aws_db_parameter_group.{pg}." in str(val(db, "parameter_group_name")) for pg in force_ssl),
              f"RDS {name}: uses the TLS-only parameter group")
        check(val(db, "storage_encrypted") is True and val(db, "publicly_accessible") is False,
              f"RDS {name}: encrypted, not public")
        check(val(db, "deletion_protection") is True, f"RDS {name}: deletion protection")

    # ElastiCache / Valkey
    rgs = of_type("aws_elasticache_replication_group")
    check(len(rgs) == 1, "ElastiCache: one replication group")
    for name, rg in rgs.items():
        check(val(rg, "transit_encryption_enabled") is True and val(rg, "transit_encryption_mode") == "required",
              f"ElastiCache {name}: in-transit encryption required")
        check(bool(val(rg, "auth_token")), f"ElastiCache {name}: an auth token")
        check(val(rg, "at_rest_encryption_enabled") is True, f"ElastiCache {name}: encrypted at rest")

    # ECR: the Dockerfile's images
    with open("deploy/docker/Dockerfile", encoding="utf-8") as f:
        dockerfile = f.read()
    copied = re.search(r"for bin in ([^;]+);", dockerfile)
    images = set(copied.group(1).split()) if copied else set()
    images_local = re.search(r"images\s*=\s*\[([^\]]*)\]", text)
    declared = set(re.findall(r'"([a-z-]+)"', images_local.group(1))) if images_local else set()
    check(bool(images) and declared == images, f"ECR: a repository per image of the Dockerfile ({sorted(images ^ declared)})")
    repos = of_type("aws_ecr_repository")
    image_repo = repos.get("image", {})
    check(val(image_repo, "image_tag_mutability") == "IMMUTABLE", "ECR: image tags immutable")
    for name, repo in repos.items():
        scan = (repo.get("image_scanning_configuration") or [{}])[0]
        check(val(scan, "scan_on_push") is True, f"ECR {name}: scan on push")
    check(val(repos.get("build_cache", {}), "image_tag_mutability") == "MUTABLE", "ECR: a mutable build-cache repository")
    lifecycles = of_type("aws_ecr_lifecycle_policy")
    check({"image", "build_cache"} <= set(lifecycles), "ECR: lifecycle policies for the images and the cache")

    # GitHub OIDC and the deploy role
    oidc = of_type("aws_iam_openid_connect_provider")
    check(any(val(b, "url") == "https://token.actions.githubusercontent.com" for b in oidc.values()),
          "IAM: the GitHub OIDC provider")
    deploy = of_type("aws_iam_role").get("deploy", {})
    trust = str(val(deploy, "assume_role_policy"))
    check("repo:${var.github_repository}:environment:${var.github_environment}" in trust
          and "sts.amazonaws.com" in trust, "IAM: only this repository's environment assumes the deploy role")
    policy = str(val(of_type("aws_iam_role_policy").get("deploy", {}), "policy"))
    # the parser renders jsonencode's argument as a Python literal: one "*" resource, the login's
    check(policy.count("'Resource': '*'") == 1 and "'Action': 'ecr:GetAuthorizationToken', 'Resource': '*'" in policy
          and "ecr:DescribeImages" in policy,
          "IAM: the deploy policy names its resources (only GetAuthorizationToken on *) and may look up images")
    assoc = of_type("aws_eks_access_policy_association").get("deploy", {})
    scope = (assoc.get("access_scope") or [{}])[0]
    check(bool(of_type("aws_eks_access_entry").get("deploy")) and val(scope, "type") == "namespace",
          "EKS: an access entry for the deploy role, limited to the namespace")
    roles = of_type("aws_iam_role")
    check({"external_secrets", "cert_manager"} <= set(roles), "IAM: IRSA roles for External Secrets and cert-manager")
    check("system:serviceaccount:external-secrets:external-secrets" in text
          and "system:serviceaccount:cert-manager:cert-manager" in text, "IAM: each IRSA role trusts one service account")

    # What the chart's production values expect
    with open(PROD, encoding="utf-8") as f:
        prod = yaml.safe_load(f)
    remote = set((prod.get("externalSecrets") or {}).get("remoteKeys", {}).values())
    names = set(re.findall(r'"(prod/\$\{var\.name\}/[a-z]+)"', text))
    name_default = val(variables.get("name", {}), "default")
    names = {n.replace("${var.name}", str(name_default)) for n in names}
    check(bool(remote) and remote == names, f"Secrets Manager entries are the chart's remoteKeys ({sorted(remote ^ names)})")
    proxies = json.loads(prod["services"]["edge-gateway"]["env"]["EDGE_GATEWAY_TRUSTED_PROXIES"])
    ingress = val(variables.get("ingress_subnet_cidrs", {}), "default")
    check(proxies == ingress, f"the gateway's trusted_proxies are the ingress subnets ({proxies} vs {ingress})")
    check("ingress_subnet_cidrs" in outputs and "secret_names" in outputs and "deploy_role_arn" in outputs,
          "outputs for the chart and the workflow")

    print(f"terraform (static): {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
