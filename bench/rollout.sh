#!/usr/bin/env bash
# Benchmark what a rollout costs a plan: `bash bench/rollout.sh [SIZES...]` (default 10000).
# For each size: a generated tenant repo in git, applied on the local target; then the full
# plan with no rollout block, with one and nothing changed, as a template change starts a
# rollout (its canary wave of 1 % planned from the head, every other tenant from the shared
# inputs it runs on), and in the middle of one (the canary wave applied and baking). Prints
# wall time and peak memory (median of REPEATS, default 3), and the canary wave's apply, run
# once. BENCH_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- 10000
REPEATS=${REPEATS:-3}

# shellcheck source=lib.sh
source bench/lib.sh
require_gnu_time
if [ -n "${BENCH_BIN:-}" ]; then BIN=$BENCH_BIN; else build_release; fi
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenant-reconcile-rolloutbench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
export NO_COLOR=1



echo
echo "| tenants | what | time (s) | peak memory (MB) |"
echo "| ---: | --- | ---: | ---: |"
for n in "$@"; do
  dir="$TMP/repo-$n"
  python3 bench/generate.py "$n" "$dir" >/dev/null
  printf '.tenant-reconcile/\n' >"$dir/.gitignore"
  (cd "$dir" && git_ init -q && git_ add -A && git_ commit -qm "$n tenants")
  echo "applying $n tenants ..." >&2
  run_once -C "$dir" apply --auto-approve --parallelism 16 >/dev/null
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan)
  echo "| $n | \`plan\`, no rollout block | $s | $mb |"
  cat >>"$dir/tenant-reconcile.hcl" <<'HCL'

rollout {
  wave "canary" {
    percent      = 1
    max_parallel = 10
    bake         = "1h"
  }
  wave "rest" {
    max_parallel = 50
  }
}
HCL
  (cd "$dir" && git_ add -A && git_ commit -qm "rollouts in waves")
  run_once -C "$dir" apply --auto-approve >/dev/null
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan)
  echo "| $n | \`plan\`, a rollout block, nothing changed | $s | $mb |"
  (cd "$dir" && echo '# managed by the platform team' >>templates/files/namespace.yaml.tera &&
    git_ commit -qam "a template change for every tenant")
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan)
  grep -q "rollout r1 starts" "$TMP/out" || { echo "the plan started no rollout" >&2; exit 1; }
  echo "| $n | \`plan\`, a template change starts a rollout (canary: $(( (n + 99) / 100 )) tenants) | $s | $mb |"
  read -r s mb < <(run_once -C "$dir" apply --auto-approve --parallelism 16)
  echo "| $n | \`apply\` of the canary wave (once) | $s | $mb |"
  read -r s mb < <(run_median "$REPEATS" -C "$dir" plan)
  grep -q "bakes until" "$TMP/out" || { echo "the canary wave is not baking" >&2; exit 1; }
  echo "| $n | \`plan\` mid-rollout, the canary wave baking | $s | $mb |"
done
