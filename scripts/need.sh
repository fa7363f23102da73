#!/usr/bin/env bash
# need.sh COMMAND DEBIAN_PACKAGE: makes COMMAND available, installing
# DEBIAN_PACKAGE with apt-get when it is missing (as root). Prints the
# command's path. Exit 2 means "cannot have it here" (not root, no apt-get,
# the install failed): tests skip then, saying why, and fail under CI=true.
#
# Test packages run in parallel and apt-get allows one install at a time,
# so installs queue on a lock.
set -euo pipefail
cmd="$1" pkg="$2"
if p="$(command -v "$cmd")"; then echo "$p"; exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
	echo "need: $cmd is missing and cannot be installed here (package $pkg; needs root and apt-get)" >&2
	exit 2
fi
exec 9>/tmp/baton-need.lock
flock 9
if p="$(command -v "$cmd")"; then echo "$p"; exit 0; fi
log="/tmp/baton-need-$pkg.log"
echo "need: installing $pkg for $cmd ..." >&2
export DEBIAN_FRONTEND=noninteractive
# An index older than the mirror's packages makes installs fail: refresh once per lock.
apt-get update -qq >"$log" 2>&1 || true
if ! apt-get install -y -qq --no-install-recommends "$pkg" >>"$log" 2>&1; then
	echo "need: apt-get install $pkg failed; see $log" >&2
	tail -5 "$log" >&2
	exit 2
fi
if ! p="$(command -v "$cmd")"; then
	echo "need: $pkg is installed but $cmd is not on PATH" >&2
	exit 2
fi
echo "$p"
