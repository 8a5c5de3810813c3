#!/usr/bin/env bash
# Installs what building, testing and the demo need, and mounts bpffs. Idempotent, non-interactive.
set -euo pipefail

packages=(libxdp-dev libbpf-dev libelf-dev zlib1g-dev linux-libc-dev iproute2 ethtool curl bpftool procps iputils-ping
          gnuplot-nox util-linux   # the benchmark's plot and taskset
          bird2                    # announcing VIPs over BGP (run --bird-socket), and its tests
          keepalived               # `keepalived -t`: the tests check that XDirector reads its files alike
          openssl                  # a certificate for the SSL_GET test
          python3-scapy)           # crafted malformed frames in the malformed-traffic test
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "setup: run as root to install ${missing[*]}" >&2; exit 1; }
    echo "setup: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BPF maps are pinned under /sys/fs/bpf/xdirector/<ifname>/.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    [ "$(id -u)" -eq 0 ] && mount -t bpf bpf /sys/fs/bpf || echo "setup: bpffs is not mounted at /sys/fs/bpf (maps will not be pinned)" >&2
fi

command -v swift >/dev/null || { echo "setup: the Swift toolchain (6.0 or later) is not on PATH" >&2; exit 1; }
echo "setup: ready"
