#!/usr/bin/env bash
# Make (or move) branch NAME: REV (default main) with each PATCH applied in
# order, in one commit, without touching this checkout (a worktree under
# /tmp). For the prepared patches in bench/wgmma: then
# `scripts/gpu-bundle.sh --base main --base NAME ...` on another branch, or
# `git switch NAME` to bundle it as "this build".
# usage: scripts/patch-branch.sh NAME [--from REV] PATCH [PATCH ...]
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help|"") sed -n '2,7p' "$0"; [ -n "${1:-}" ]; exit $? ;; esac
name="$1"; shift
from=main
if [ "${1:-}" = "--from" ]; then from="${2:?--from needs a revision}"; shift 2; fi
[ $# -gt 0 ] || { echo "patch-branch.sh: no patch given (see --help)" >&2; exit 2; }
patches=()
for p in "$@"; do
  [ -f "$p" ] || { echo "patch-branch.sh: no such patch: $p" >&2; exit 2; }
  patches+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")")
done
if [ "$(git rev-parse --abbrev-ref HEAD)" = "$name" ]; then
  echo "patch-branch.sh: $name is checked out here; switch away first" >&2; exit 2
fi
wt=$(mktemp -d /tmp/patch-branch.XXXXXX)
trap 'git worktree remove --force "$wt" >/dev/null 2>&1 || true; rm -rf "$wt"' EXIT
git worktree add -q --detach "$wt" "$from"
for p in "${patches[@]}"; do
  git -C "$wt" apply "$p" || { echo "patch-branch.sh: $p does not apply to $from (after the ones before it)" >&2; exit 1; }
done
git -C "$wt" add -A
git -C "$wt" commit -qm "$name: $(for p in "${patches[@]}"; do basename "$p"; done | paste -sd' ') on $(git rev-parse --short "$from")"
git branch -f "$name" "$(git -C "$wt" rev-parse HEAD)" >/dev/null
echo "patch-branch.sh: $name is $(git rev-parse --short "$name"): $(git log -1 --format=%s "$name")"
