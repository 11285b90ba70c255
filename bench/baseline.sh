#!/usr/bin/env bash
# The boot flow the way the original shell script did it (bash + curl + jq),
# kept only as the benchmark's baseline: it is NOT the project's behaviour.
#
#   - admin token file absent or empty: write the placeholder, done;
#   - .runner present: take its id with jq, GET /api/v1/admin/runners/$id;
#     200 keeps it and writes the placeholder, anything else deletes it;
#   - then GET /api/v1/admin/runners/registration-token once a second until
#     it answers 200, for at most --retry-timeout seconds; write TOKEN=<token>
#     through a temporary and mv.
#
# Same command line as hive-ci-prefetch, in the --opt=value form.  The admin
# token goes to curl in a config read from stdin (a here-doc), never in argv.
set -euo pipefail

forge_url=http://127.0.0.1:3000
core_token_file=/var/lib/hyperhive/forge-core-token
container_root=/var/lib/nixos-containers/hive-ci
runner_file=/var/lib/gitea-runner/hive/.runner
output=/run/hive-ci/runner-token
retry_timeout=30

for arg in "$@"; do
	case $arg in
	--forge-url=*) forge_url=${arg#*=} ;;
	--core-token-file=*) core_token_file=${arg#*=} ;;
	--container-root=*) container_root=${arg#*=} ;;
	--runner-file=*) runner_file=${arg#*=} ;;
	--output=*) output=${arg#*=} ;;
	--retry-timeout=*) retry_timeout=${arg#*=} ;;
	-q | --quiet | -v | --verbose) ;;
	*)
		echo "baseline: unknown option $arg" >&2
		exit 64
		;;
	esac
done
forge_url=${forge_url%/}
runner=$container_root$runner_file

write_token() { # atomically: a temporary next to the output, then mv
	local tmp
	mkdir -p "$(dirname "$output")"
	tmp=$(mktemp "$output.XXXXXX")
	printf 'TOKEN=%s\n' "$1" >"$tmp"
	mv -f "$tmp" "$output"
}

# GET $1; the body goes to $2, the status to stdout.  The header travels in
# a curl config on stdin, so the token is never in any process's argv.
get() {
	curl --silent --config - --output "$2" --write-out '%{http_code}' \
		"$forge_url/api/v1$1" <<EOF || true
header = "Authorization: token $admin"
EOF
}

if [ ! -s "$core_token_file" ]; then
	echo "baseline: no admin token yet" >&2
	write_token placeholder
	exit 0
fi
admin=$(cat "$core_token_file")

if [ -f "$runner" ]; then
	id=$(jq -r .id "$runner")
	code=$(get "/admin/runners/$id" /dev/null)
	if [ "$code" = 200 ]; then
		echo "baseline: runner $id still registered" >&2
		write_token placeholder
		exit 0
	fi
	echo "baseline: runner $id: $code; deleting .runner" >&2
	rm -f "$runner"
fi

body=$(mktemp)
trap 'rm -f "$body"' EXIT
deadline=$((SECONDS + retry_timeout))
while :; do
	code=$(get /admin/runners/registration-token "$body")
	[ "$code" = 200 ] && break
	if ((SECONDS >= deadline)); then
		echo "baseline: no registration token within $retry_timeout s" >&2
		exit 75
	fi
	sleep 1
done
token=$(jq -r .token "$body")
write_token "$token"
echo "baseline: registration token written to $output" >&2
