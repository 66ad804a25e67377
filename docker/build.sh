#!/usr/bin/env bash
# Builds the Redis node image used by the docker backend of cluster/ without
# any container registry:
#
#   * redis-server and redis-cli are compiled from Debian's source package with
#     `make MALLOC=libc USE_SYSTEMD=no BUILD_TLS=yes` (Debian's own binary is
#     linked with jemalloc and crashes at start under libfaketime; TLS is
#     built in, linked against the system's OpenSSL);
#   * the binaries, their shared libraries (from ldd, dynamic loader included;
#     libssl and libcrypto come along this way) and libfaketime are copied
#     into a small build context and the image is built FROM scratch.
#
# The image is tagged quorumlock/redis:<hash of the inputs> and
# quorumlock/redis:current. When the hash tag already exists nothing is done.
# The compiled redis is kept outside the repository, under
# ${XDG_CACHE_HOME:-$HOME/.cache}/quorumlock.
#
# With QUORUMLOCK_REDIS_IMAGE set (e.g. redis:7 on a machine that can pull)
# the script does nothing: tests use that image instead, and clock faults are
# reported unsupported unless the image carries libfaketime.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo_name="quorumlock/redis"

log() { printf 'docker/build.sh: %s\n' "$*" >&2; }

if [ -n "${QUORUMLOCK_REDIS_IMAGE:-}" ]; then
	log "QUORUMLOCK_REDIS_IMAGE=${QUORUMLOCK_REDIS_IMAGE} is set; not building"
	exit 0
fi

command -v docker >/dev/null || { log "docker CLI not found"; exit 1; }
docker info >/dev/null 2>&1 || { log "docker daemon not reachable"; exit 1; }

# Every file that shapes the image is an input of the hash.
inputs=("$here/build.sh" "$here/Dockerfile")
hash="$(cat "${inputs[@]}" | sha256sum | cut -c1-16)"
tag="${repo_name}:${hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
	docker tag "$tag" "${repo_name}:current"
	log "image $tag is up to date (tagged ${repo_name}:current)"
	exit 0
fi

start=$(date +%s)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/quorumlock"
mkdir -p "$cache"

SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { log "need root or sudo to apt-get install"; exit 1; }
	SUDO=(sudo)
fi

# --- packages ---------------------------------------------------------------
have_deb_src() {
	grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
		/etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! have_deb_src; then
	log "adding a deb-src entry for bookworm"
	"${SUDO[@]}" tee /etc/apt/sources.list.d/quorumlock-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt_quiet=(-o Dpkg::Use-Pty=0 -q)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get "${apt_quiet[@]}" update >/dev/null
"${SUDO[@]}" apt-get "${apt_quiet[@]}" install -y --no-install-recommends \
	build-essential dpkg-dev pkg-config libssl-dev libfaketime >/dev/null
"${SUDO[@]}" apt-get "${apt_quiet[@]}" build-dep -y redis >/dev/null

# --- redis from Debian's source package --------------------------------------
src_root="$cache/redis-src"
bin_dir="$cache/redis-bin"
make_flags=(MALLOC=libc USE_SYSTEMD=no BUILD_TLS=yes)
stamp="$bin_dir/.stamp"
want_stamp="$(apt-cache showsrc redis | awk '/^Version:/{print $2; exit}') ${make_flags[*]}"

if [ ! -x "$bin_dir/redis-server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
	rm -rf "$src_root" "$bin_dir"
	mkdir -p "$src_root" "$bin_dir"
	log "fetching Debian's redis source into $src_root"
	(cd "$src_root" && apt-get "${apt_quiet[@]}" source redis >/dev/null 2>&1)
	srcdir="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'redis-*' | head -n1)"
	[ -n "$srcdir" ] || { log "apt-get source redis produced no directory"; exit 1; }
	log "building redis in $srcdir (${make_flags[*]})"
	make -C "$srcdir" -j"$(nproc)" "${make_flags[@]}" >"$src_root/make.log" 2>&1 || {
		tail -n 40 "$src_root/make.log" >&2
		log "redis build failed; full log in $src_root/make.log"
		exit 1
	}
	cp "$srcdir/src/redis-server" "$srcdir/src/redis-cli" "$bin_dir/"
	# A build without OpenSSL found would only fail later, when a node is
	# started with --tls-port.
	ldd "$bin_dir/redis-server" | grep -q 'libssl\.so' || {
		log "redis-server is not linked with libssl: the TLS build failed"
		exit 1
	}
	echo "$want_stamp" >"$stamp"
fi

# --- build context -------------------------------------------------------------
faketime_lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
[ -f "$faketime_lib" ] || { log "libfaketime not found at $faketime_lib"; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
rootfs="$ctx/rootfs"
mkdir -p "$rootfs/usr/bin" "$rootfs/usr/lib/faketime" "$rootfs/data" "$rootfs/faketime" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp "$bin_dir/redis-server" "$bin_dir/redis-cli" "$rootfs/usr/bin/"
cp -L "$faketime_lib" "$rootfs/usr/lib/faketime/libfaketime.so.1"

# Shared libraries (and the loader) of every binary, at the same paths.
copy_libs() {
	ldd "$1" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]+ \(/{print $1}' | while read -r lib; do
		mkdir -p "$rootfs$(dirname "$lib")"
		cp -L "$lib" "$rootfs$lib"
	done
}
for b in "$bin_dir/redis-server" "$bin_dir/redis-cli" "$faketime_lib"; do
	copy_libs "$b"
done
# The loader is reached through /lib64 on x86-64; keep the symlink layout.
if [ -e /lib64/ld-linux-x86-64.so.2 ] && [ ! -e "$rootfs/lib64/ld-linux-x86-64.so.2" ]; then
	mkdir -p "$rootfs/lib64"
	cp -L /lib64/ld-linux-x86-64.so.2 "$rootfs/lib64/"
fi
cp "$here/Dockerfile" "$ctx/Dockerfile"

log "docker build -t $tag"
docker build -q -t "$tag" -t "${repo_name}:current" \
	--label "org.quorumlock.inputs=$hash" "$ctx" >/dev/null
log "built $tag in $(($(date +%s) - start)) s"
