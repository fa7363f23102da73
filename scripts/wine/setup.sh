#!/usr/bin/env bash
# Prepares a Wine prefix in which Go test binaries built for Windows run:
# installs Wine when missing (as root), boots a prefix, and adds the one DLL
# that Wine 8.0 lacks for Go >= 1.22 (bcryptprimitives.dll!ProcessPrng,
# forwarded to advapi32!SystemFunction036).
#
# Prints the prefix path on success. Exit 2 means "cannot run here" (no Wine
# and no way to install it): callers skip locally and fail in CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${BATON_WINEPREFIX:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/baton-wine}"

need_install=()
command -v wine >/dev/null 2>&1 || need_install+=(wine64)
command -v x86_64-w64-mingw32-ld >/dev/null 2>&1 || need_install+=(binutils-mingw-w64-x86-64)
if ((${#need_install[@]})); then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		echo "wine lane: missing ${need_install[*]} and cannot install them (need root and apt-get)" >&2
		exit 2
	fi
	echo "wine lane: installing ${need_install[*]} ..." >&2
	# One apt-get at a time with the tests' installs (scripts/need.sh).
	exec 9>/tmp/baton-need.lock
	flock 9
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || true
	if ! apt-get install -y -qq "${need_install[@]}" >/tmp/baton-wine-apt.log 2>&1; then
		echo "wine lane: apt-get install failed; see /tmp/baton-wine-apt.log" >&2
		tail -5 /tmp/baton-wine-apt.log >&2
		exit 2
	fi
fi

export WINEPREFIX="$prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY
if [[ ! -f "$prefix/system.reg" ]]; then
	echo "wine lane: creating prefix $prefix ..." >&2
	mkdir -p "$prefix"
	wineboot -i </dev/null >/dev/null 2>&1 || true
	wineserver -w || true
fi
sys32="$prefix/drive_c/windows/system32"
if [[ ! -f "$sys32/bcryptprimitives.dll" ]]; then
	[[ -d "$sys32" ]] || { echo "wine lane: prefix $prefix has no system32" >&2; exit 2; }
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	printf '.text\n.globl DllMain\nDllMain:\n\tmovl $1, %%eax\n\tret\n' >"$tmp/dllmain.s"
	printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\n\tProcessPrng = advapi32.SystemFunction036\n' >"$tmp/bcp.def"
	x86_64-w64-mingw32-as "$tmp/dllmain.s" -o "$tmp/dllmain.o"
	x86_64-w64-mingw32-ld --shared -e DllMain --subsystem windows -o "$tmp/bcryptprimitives.dll" "$tmp/dllmain.o" "$tmp/bcp.def"
	cp "$tmp/bcryptprimitives.dll" "$sys32/"
fi
echo "$prefix"
