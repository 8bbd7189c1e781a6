#!/usr/bin/env python3
"""Generate a synthetic tenant repo for benchmarking: `generate.py N DIR [ISOLATION]`.

With ISOLATION (shared, schema or database) every tenant uses that mode instead of its
plan's default.

Plans, templates and migrations are copied from the repo this script lives in, so the
benchmark exercises the same rendering and migration work as the real example repo.
Output is deterministic (fixed seed) so runs on different machines are comparable.
"""
import random
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
         "cyberdyne", "soylent", "wonka", "vandelay", "dunder", "pied-piper", "aperture"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-2"]
LOCALES = ["en", "de", "fr"]
# Roughly how a real customer base skews: most on the free tier, few on enterprise.
PLAN_WEIGHTS = {"starter": 6, "growth": 3, "enterprise": 1}


def declared(plan_file: Path) -> dict:
    """The keys of the plan's `quotas = {...}` and `features = {...}` blocks.

    Read from the HCL rather than hard-coded because validate rejects overrides of
    anything the plan does not declare, and the plans may change under us."""
    text = plan_file.read_text()
    out = {}
    for block in ("quotas", "features"):
        m = re.search(block + r"\s*=\s*\{(.*?)\}", text, re.S)
        body = m.group(1) if m else ""
        out[block] = dict(re.findall(r"^\s*([a-z_][a-z0-9_]*)\s*=\s*(\S+)", body, re.M))
    return out


def tenant_yaml(i: int, rng: random.Random, plans: dict, isolation: str) -> tuple:
    # The number prefix keeps slugs unique; the name suffix keeps them realistic-looking.
    slug = f"t{i:05d}-{rng.choice(NAMES)}"
    plan = rng.choices(list(PLAN_WEIGHTS), weights=list(PLAN_WEIGHTS.values()))[0]
    lines = [
        f"slug: {slug}",
        f"name: {slug.split('-', 1)[1].replace('-', ' ').title()} {i}",
        f"plan: {plan}",
    ]
    if rng.random() < 0.05:
        lines.append("status: suspended")
    lines += ["owner:", f"  email: admin@{slug}.example", f"region: {rng.choice(REGIONS)}",
              f"locale: {rng.choice(LOCALES)}"]
    decl = plans[plan]
    if decl["quotas"] and rng.random() < 0.2:
        q = rng.choice(sorted(decl["quotas"]))
        base = int(decl["quotas"][q]) if decl["quotas"][q].isdigit() else 10
        lines += ["quotas:", f"  {q}: {base * rng.choice([2, 3, 5])}"]
    if decl["features"] and rng.random() < 0.15:
        f = rng.choice(sorted(decl["features"]))
        lines += ["features:", f"  {f}: {'false' if decl['features'][f] == 'true' else 'true'}"]
    if rng.random() < 0.5:
        lines += ["labels:", f"  team: {rng.choice(['emea', 'americas', 'apac'])}"]
    if isolation:
        lines.append(f"isolation: {isolation}")
    return slug, "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) not in (3, 4) or not sys.argv[1].isdigit():
        sys.exit("usage: generate.py N DIR [shared|schema|database]")
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    isolation = sys.argv[3] if len(sys.argv) == 4 else ""
    if isolation not in ("", "shared", "schema", "database"):
        sys.exit("ISOLATION must be shared, schema or database")
    if n > 99999:
        sys.exit("N must be at most 99999 (slugs use a 5-digit number)")
    out.mkdir(parents=True, exist_ok=True)
    for d in ("plans", "templates", "migrations"):
        shutil.copytree(ROOT / d, out / d, dirs_exist_ok=True)
    config = ROOT / "tenant-reconcile.hcl"
    if config.exists():
        # The config names the example's hooks: the fleet runs them as the example does.
        shutil.copy(config, out / config.name)
        if (ROOT / "hooks").is_dir():
            shutil.copytree(ROOT / "hooks", out / "hooks", dirs_exist_ok=True)
    plans = {p.stem: declared(p) for p in sorted((out / "plans").glob("*.hcl"))}
    missing = set(PLAN_WEIGHTS) - set(plans)
    if missing:
        sys.exit(f"plans/ lacks {sorted(missing)}")
    rng = random.Random(42)
    (out / "tenants").mkdir(exist_ok=True)
    for i in range(1, n + 1):
        slug, text = tenant_yaml(i, rng, plans, isolation)
        (out / "tenants" / f"{slug}.yaml").write_text(text)


if __name__ == "__main__":
    main()
