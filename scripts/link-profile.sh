#!/usr/bin/env bash
# Emulated links for the regime map (docs/REGIME_MAP.md): two network namespaces joined by a
# veth pair, each end shaped by `tc ... tbf` to the profile's rate. The delay is not set here
# (this kernel has no netem): the coordinator's relay adds it (coordinator/src/link.rs, which
# knows the same names, indices and addresses).
#
#   scripts/link-profile.sh up PROFILE      # (re)create the profile's namespaces; root only
#   scripts/link-profile.sh down PROFILE    # remove them
#   scripts/link-profile.sh down-all        # remove every profile's namespaces
#   scripts/link-profile.sh status          # the namespaces present and their qdiscs
#   scripts/link-profile.sh list            # the profiles
#
# Profile N has the sharer side `kvlink<N>a` (10.203.N.1/30, veth kvlink<N>a0) and the
# receiver side `kvlink<N>b` (10.203.N.2/30, veth kvlink<N>b0). `loopback` has no namespaces.
set -euo pipefail

PROFILE_NAMES="loopback 10gbit-0.1ms 1gbit-1ms 100mbit-20ms"

profile() {
    case "$1" in
        loopback) index=0 rate= ;;
        10gbit-0.1ms) index=1 rate=10gbit rate_bytes=1250000000 ;;
        1gbit-1ms) index=2 rate=1gbit rate_bytes=125000000 ;;
        100mbit-20ms) index=3 rate=100mbit rate_bytes=12500000 ;;
        *)
            echo "unknown profile '$1'; the profiles are: $PROFILE_NAMES" >&2
            exit 2
            ;;
    esac
    ns_a="kvlink${index}a"
    ns_b="kvlink${index}b"
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "link profiles need root (network namespaces, veth, tc)" >&2
        exit 1
    fi
    if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
        echo "link profiles need iproute2 (ip, tc)" >&2
        exit 1
    fi
}

down() {
    profile "$1"
    [ "$index" -eq 0 ] && return 0
    # Deleting a namespace deletes the veth end inside it, and with it its peer.
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
}

up() {
    profile "$1"
    if [ "$index" -eq 0 ]; then
        echo "loopback: nothing to set up"
        return 0
    fi
    down "$1"
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    ip link add "${ns_a}0" type veth peer name "${ns_b}0"
    ip link set "${ns_a}0" netns "$ns_a"
    ip link set "${ns_b}0" netns "$ns_b"
    ip -n "$ns_a" addr add "10.203.${index}.1/30" dev "${ns_a}0"
    ip -n "$ns_b" addr add "10.203.${index}.2/30" dev "${ns_b}0"
    for ns in "$ns_a" "$ns_b"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set "${ns}0" up
    done
    # Bucket: 10 ms at the rate, at least 64 KiB (tbf needs rate/HZ at least; with 2 ms a
    # 1 Gbit/s veth lost 13% of its rate on this VM's timer); queue: 100 ms.
    local burst=$((rate_bytes / 100))
    [ "$burst" -lt 65536 ] && burst=65536
    for ns in "$ns_a" "$ns_b"; do
        tc -n "$ns" qdisc replace dev "${ns}0" root tbf rate "$rate" burst "$burst" latency 100ms
    done
    echo "$1: $ns_a (10.203.${index}.1) <-> $ns_b (10.203.${index}.2), tbf $rate each way, burst $burst B"
}

status() {
    for name in $PROFILE_NAMES; do
        profile "$name"
        [ "$index" -eq 0 ] && continue
        if ip netns list | grep -qw "$ns_a"; then
            echo "$name: up"
            tc -n "$ns_a" qdisc show dev "${ns_a}0"
            tc -n "$ns_b" qdisc show dev "${ns_b}0"
        else
            echo "$name: down"
        fi
    done
}

case "${1:-}" in
    up) need_root; up "${2:?profile}" ;;
    down) need_root; down "${2:?profile}" ;;
    down-all) need_root; for p in $PROFILE_NAMES; do down "$p"; done ;;
    status) need_root; status ;;
    list) echo "$PROFILE_NAMES" | tr ' ' '\n' ;;
    *)
        sed -n '2,14p' "$0" >&2
        exit 2
        ;;
esac
