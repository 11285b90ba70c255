#!/bin/sh
# The build and test dependencies: present, installed (as root, with apt), or
# named in one line.
pkgs="libcurl4-openssl-dev libjansson-dev libcmocka-dev pkg-config python3"
command -v cc >/dev/null 2>&1 || pkgs="build-essential $pkgs"
have() {
	command -v pkg-config >/dev/null 2>&1 &&
		pkg-config --exists libcurl jansson cmocka &&
		command -v cc >/dev/null 2>&1 &&
		command -v "${PYTHON:-python3}" >/dev/null 2>&1
}
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing $pkgs" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq $pkgs >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $pkgs >/dev/null; }
	have && exit 0
fi
echo "deps: missing libcurl, jansson or cmocka headers: run 'sudo apt-get install $pkgs' (or 'nix develop')" >&2
exit 1
