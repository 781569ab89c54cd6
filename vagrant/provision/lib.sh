# shellcheck shell=bash
# Sourced by every provisioning script: the lab's variables (generated/lab.env, rendered from
# metalxdp/lab/spec.py) and small idempotent helpers. Needs REPO (the checkout in the VM) and
# LAB_HOST (this VM's name), both set by the Vagrantfile.

: "${REPO:=/vagrant-repo}"
: "${LAB_HOST:?LAB_HOST must name this VM (the Vagrantfile sets it)}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[%s] %s\n' "$LAB_HOST" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$LAB_HOST" "$*" >&2; exit 1; }

LAB_ENV="$REPO/vagrant/generated/lab.env"
[ -r "$LAB_ENV" ] || die "$LAB_ENV is missing: is the repository synced to $REPO (vagrant rsync)?"
# shellcheck source=../generated/lab.env
. "$LAB_ENV"

# host_var node2 IP4 -> value of NODE2_IP4
host_var() {
    local name
    name="$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')_$2"
    [ -n "${!name:-}" ] || die "$LAB_ENV has no $name"
    printf '%s' "${!name}"
}

MY_IP4="$(host_var "$LAB_HOST" IP4)"
MY_IP6="$(host_var "$LAB_HOST" IP6)"

# apt_install [--with-recommends] PKG...: installs the packages that are not installed yet
# (apt-get update once per script); without recommends unless asked
apt_install() {
    local missing=() p recommends=--no-install-recommends
    if [ "${1:-}" = --with-recommends ]; then
        recommends=--install-recommends
        shift
    fi
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -q
        _APT_UPDATED=1
    fi
    log "installing ${missing[*]}"
    apt-get install -y -q "$recommends" "${missing[@]}"
}

# write_if_changed PATH [MODE]: stdin to PATH when different; returns 0 if it wrote, 1 if not
write_if_changed() {
    local path=$1 mode=${2:-0644} tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    mkdir -p "$(dirname "$path")"
    install -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    log "wrote $path"
    return 0
}

# The interface on the lab segment: the one Vagrant gave our IPv4 address (eth1 on Debian's
# boxes; eth0 is the provider's management NAT).
lab_iface() {
    local ifname
    ifname="$(ip -o -4 addr show to "$MY_IP4/32" | awk '{print $2; exit}')"
    [ -n "$ifname" ] || die "no interface has $MY_IP4: Vagrant did not configure the private network"
    printf '%s' "$ifname"
}

# lab_net_unit [IP ROUTE ARGS]...: a systemd unit that adds this VM's IPv6 address (Vagrant sets
# only the IPv4 one) and the given routes on the lab interface, at every boot and before k3s.
# Each argument is one `ip route replace` argument string, e.g. "203.0.113.0/24 via 192.0.2.1".
lab_net_unit() {
    local ifname route unit=/etc/systemd/system/metalxdp-lab-net.service
    ifname="$(lab_iface)"
    {
        printf '%s\n' "# written by vagrant/provision (metalxdp lab)" "[Unit]" \
            "Description=metalxdp lab: IPv6 address and routes on $ifname" \
            "After=network-online.target" "Wants=network-online.target" \
            "Before=k3s.service k3s-agent.service frr.service" "" "[Service]" "Type=oneshot" \
            "RemainAfterExit=yes" \
            "ExecStart=/sbin/ip -6 addr replace $MY_IP6/$LAB_PREFIX6 dev $ifname nodad"
        for route in "$@"; do
            case $route in
                *:*) printf 'ExecStart=/sbin/ip -6 route replace %s\n' "$route" ;;
                *) printf 'ExecStart=/sbin/ip -4 route replace %s\n' "$route" ;;
            esac
        done
        printf '%s\n' "" "[Install]" "WantedBy=multi-user.target"
    } | write_if_changed "$unit" && systemctl daemon-reload
    systemctl enable -q metalxdp-lab-net.service
    systemctl restart metalxdp-lab-net.service
}
