# hive-ci-admin-token: create the forge's site-admin API token file that
# hive-ci-prefetch reads, with the forge's own command line (Forgejo or
# Gitea: the same `admin user` subcommands). Installed by nix/hive-ci.nix
# as hive-ci-admin-token.service (writeShellApplication: bash, errexit,
# nounset, pipefail, coreutils on PATH); run it with bash.
#
#   mint FORGE_CLI USER EMAIL STAGE
#       As the forge's user, with the environment of the forge's unit
#       (FORGEJO_WORK_DIR/FORGEJO_CUSTOM or GITEA_*): create USER as a site
#       administrator unless it exists (its generated password is
#       discarded), then an access token with the write:admin scope under a
#       new name, into STAGE (mode 0600, in a directory of the forge's
#       user).
#   install STAGE TARGET OWNER
#       As root: install STAGE's token as TARGET, root 0600, atomically,
#       unless TARGET exists and is not empty (then it is left alone), and
#       remove STAGE. STAGE must be a regular file of OWNER (the forge's
#       user): a symlink or a file of someone else is refused, so the forge
#       cannot make root copy another file.
#
# Rules: no token and no password is ever printed, put in argv or in the
# environment; only `cat` and redirections carry the token.
set -euo pipefail
umask 077

me=hive-ci-admin-token
say() { printf '%s: %s\n' "$me" "$*"; }
die() {
	printf '%s: %s\n' "$me" "$*" >&2
	exit 1
}

# The token alphabet hive-ci-prefetch accepts, on one line.
valid_token() {
	local t
	t=$(cat -- "$1") || return 1
	[[ $t =~ ^[A-Za-z0-9_-]{1,255}$ ]]
}

# Does the output of `admin user list` name the user (second column)?
listed() {
	local id name rest
	while read -r id name rest; do
		[[ $id =~ ^[0-9]+$ && $name == "$1" ]] && return 0
	done
	return 1
}

mint() {
	[ $# -eq 4 ] || die "usage: mint FORGE_CLI USER EMAIL STAGE"
	local cli=$1 user=$2 email=$3 stage=$4 admins all name
	rm -f -- "$stage" "$stage.new"

	admins=$("$cli" admin user list --admin) || die "cannot list the forge's administrators (is the forge set up?)"
	if listed "$user" <<<"$admins"; then
		say "site administrator $user exists"
	else
		all=$("$cli" admin user list) || die "cannot list the forge's users"
		if listed "$user" <<<"$all"; then
			die "forge user $user exists but is not a site administrator: make it one, or choose another services.hyperhive.ci.adminToken.user"
		fi
		# stdout names the generated password: discarded, never shown.
		"$cli" admin user create --admin --username "$user" --email "$email" \
			--random-password --must-change-password=false >/dev/null ||
			die "cannot create the site administrator $user"
		say "created site administrator $user"
	fi

	# Token names are unique per user.
	name="hive-ci-prefetch-$(date -u +%Y%m%dT%H%M%SZ)-$$"
	if ! "$cli" admin user generate-access-token --username "$user" \
		--token-name "$name" --scopes write:admin --raw >"$stage.new"; then
		rm -f -- "$stage.new"
		die "cannot create an access token for $user"
	fi
	# --raw prints the token alone; keep its last line, whatever came before.
	tail -n 1 -- "$stage.new" >"$stage"
	rm -f -- "$stage.new"
	if ! valid_token "$stage"; then
		rm -f -- "$stage"
		die "the forge's answer to generate-access-token is not a token (not shown)"
	fi
	say "created access token $name of $user (scope write:admin)"
}

install_token() {
	[ $# -eq 3 ] || die "usage: install STAGE TARGET OWNER"
	local stage=$1 target=$2 owner=$3 uid dir tmp
	if [ -s "$target" ]; then
		rm -f -- "$stage"
		say "$target exists and is not empty: left alone"
		return 0
	fi
	uid=$(id -u -- "$owner") || die "no such user: $owner"
	# Open first, then look at what was opened: no symlink, a regular file
	# of the forge's user, small.
	[ ! -L "$stage" ] || die "$stage is a symlink: refused"
	exec 3<"$stage" || die "no token at $stage (did the mint step run?)"
	[ "$(stat -L -c '%F:%u' /dev/fd/3)" = "regular file:$uid" ] ||
		die "$stage is not a regular file of $owner: refused"

	dir=$(dirname -- "$target")
	mkdir -p -- "$dir"
	tmp=$(mktemp -- "$dir/.${target##*/}.XXXXXX")
	if ! head -c 4096 <&3 >"$tmp" || ! valid_token "$tmp"; then
		rm -f -- "$tmp"
		die "$stage does not hold a token: refused"
	fi
	exec 3<&-
	chmod 0600 -- "$tmp"
	if [ "$(id -u)" = 0 ]; then
		chown 0:0 -- "$tmp"
	fi
	sync -- "$tmp"
	if [ -e "$target" ] || [ -L "$target" ]; then
		# Empty (checked above): replaced.
		mv -fT -- "$tmp" "$target"
	elif ! ln -T -- "$tmp" "$target" 2>/dev/null; then
		# Someone created it meanwhile: theirs wins.
		rm -f -- "$tmp" "$stage"
		[ -s "$target" ] || die "cannot create $target"
		say "$target appeared meanwhile: left alone"
		return 0
	else
		rm -f -- "$tmp"
	fi
	sync -- "$dir"
	rm -f -- "$stage"
	say "installed the admin token as $target ($(stat -c '%U %a' -- "$target"))"
}

case ${1-} in
mint)
	shift
	mint "$@"
	;;
install)
	shift
	install_token "$@"
	;;
*) die "usage: mint FORGE_CLI USER EMAIL STAGE | install STAGE TARGET OWNER" ;;
esac
