/* vip_maps.h - every map of the program. With -DPIN_DIR="/sys/fs/bpf/metalxdp/<node>" each
 * map is pinned at PIN_DIR/<name> (created if missing, reused if present: that is how an
 * agent restart keeps the VIPs, counters and heartbeat). Without PIN_DIR (unit tests,
 * benchmarks) the maps live only as long as the loading process.
 *
 * Userspace writes mx_vips, mx_liveness and mx_meta and zeroes a mx_stats slot before giving
 * it to a VIP; the program only reads them and increments counters (it never inserts).
 */
#ifndef METALXDP_VIP_MAPS_H
#define METALXDP_VIP_MAPS_H

#ifdef PIN_DIR
#define MX_MAP(_type, _key, _leaf, _name, _max) \
    BPF_TABLE_PINNED(_type, _key, _leaf, _name, _max, PIN_DIR "/" #_name)
#else
#define MX_MAP(_type, _key, _leaf, _name, _max) BPF_TABLE(_type, _key, _leaf, _name, _max)
#endif

/* (VIP, ifindex) -> flags, counter slot, MAC: the VIPs this node answers for, and where. */
MX_MAP("hash", struct vip_key, struct vip_info, mx_vips, MAX_VIPS);

/* vip_info.slot -> counters, per CPU (an array: its lookup is inlined, no second hash). */
MX_MAP("percpu_array", __u32, struct vip_stats, mx_stats, MAX_VIPS);

/* [0] -> agent heartbeat and max age: the split-brain liveness gate. */
MX_MAP("array", __u32, struct liveness, mx_liveness, 1);

/* [0] -> version (hash of the C sources and cflags) of the program that created the maps. */
MX_MAP("array", __u32, struct meta, mx_meta, 1);

/* G_* index -> program-wide counters per CPU (VLAN passed, malformed, gated, ...). */
MX_MAP("percpu_array", __u32, __u64, mx_global, G_COUNTERS);

#endif /* METALXDP_VIP_MAPS_H */
