/* xdp_vip.c - metalxdp's L2 dataplane: answers ARP requests and IPv6 neighbour solicitations
 * for the VIPs this node announces, in XDP, and counts traffic per VIP.
 *
 * Verdicts: XDP_TX for a reply built in place; XDP_PASS (frame untouched) for everything
 * else, so the kernel stack sees all traffic it would see without us. The program never
 * drops. Loaded by agent/dataplane.py through BCC; tables in vip_maps.h.
 *
 * Frames handled: Ethernet II only. 802.1Q / 802.1ad tagged frames are passed untouched: the
 * VIP map is keyed by the ifindex the frame arrived on, and a tagged frame arriving on the
 * parent belongs to a VLAN sub-interface (attach the program there instead). 802.3 frames
 * (type field < 0x0600) and anything truncated or malformed are passed untouched too; the
 * agent refuses to attach to non-Ethernet interfaces (ARPHRD type != 1).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#include "vip_consts.h"
#include "vip_structs.h"
#include "vip_maps.h"
#include "vip_parsing.h"

static __always_inline void count_global(__u32 index)
{
    __u64 *c = mx_global.lookup(&index);
    if (c)
        *c += 1;
}

/* The liveness gate: 1 when the agent's heartbeat is recent enough to keep answering.
 *
 * Time is counted in jiffies: bpf_jiffies64() is a plain load (the verifier inlines it on 64-bit
 * JITs), while bpf_ktime_get_ns() and bpf_ktime_get_coarse_ns() are helper calls that cost
 * about 25 ns on the ARP reply path (bench/xdp_prog_ns.py). xdp_heartbeat() below stamps the
 * heartbeat in jiffies; the agent converts its window to jiffies with the kernel's HZ. One tick
 * (1-10 ms) of resolution is nothing against windows of hundreds of milliseconds. The
 * difference is signed so a heartbeat stamped "ahead" (tests shift it) reads as fresh. */
static __always_inline int agent_alive(void)
{
    __u32 zero = 0;
    struct liveness *l = mx_liveness.lookup(&zero);

    /* An array lookup at index 0 cannot fail; if it ever did, behave as "gate disabled". */
    if (!l || l->max_age_jiffies == 0)
        return 1;
    return (__s64)(bpf_jiffies64() - l->heartbeat_jiffies) <= (__s64)l->max_age_jiffies;
}

/* Count an IPv4/IPv6 packet addressed to a VIP announced on this interface. */
static __always_inline void count_vip_traffic(struct vip_key *key, __u64 frame_len)
{
    struct vip_info *vip = mx_vips.lookup(key);
    struct vip_stats *st;

    if (!vip)
        return;
    st = mx_stats.lookup(&vip->slot);
    if (!st)
        return;
    st->rx_packets += 1;
    st->rx_bytes += frame_len;
    if (vip->flags & VIP_F_ETP_LOCAL_MISDIRECT)
        st->misdirected += 1;
}

/* The VIP that an ARP request or NS for `key` (already validated) asks about, if this node answers
 * it now; NULL: pass the frame. Counts the request, and sets *stats for the caller to count its
 * reply. MetalLB answers requests sent to the group (broadcast for ARP, the solicited-node
 * multicast group for NS: `to_group`) or to the interface's own MAC; during a handoff only the
 * latter (the group's requests belong to the new owner). The liveness gate comes last, so gated
 * requests are still counted. */
static __always_inline struct vip_info *vip_to_answer(struct vip_key *key, const struct ethhdr *eth,
                                                      int to_group, struct vip_stats **stats)
{
    struct vip_info *vip = mx_vips.lookup(key);
    struct vip_stats *st;

    *stats = 0;
    if (!vip)
        return 0;
    st = mx_stats.lookup(&vip->slot);
    if (st)
        st->requests += 1;
    *stats = st;

    if (!mac_equal(eth->h_dest, vip->mac) && (!to_group || (vip->flags & VIP_F_HANDOFF))) {
        count_global(G_NOT_FOR_US);
        return 0;
    }
    if (!agent_alive()) {
        count_global(G_GATED);
        return 0;
    }
    return vip;
}

static __always_inline int handle_arp(struct xdp_md *ctx, void *data, void *data_end)
{
    struct ethhdr *eth = data;
    struct arp_eth *arp = HDR_AT(struct arp_eth, data, sizeof(struct ethhdr), data_end);
    struct vip_key key;
    struct vip_info *vip;
    struct vip_stats *st;
    __u32 ifindex = ctx->ingress_ifindex;

    if (!arp) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    /* Validity (passed, counted as malformed): Ethernet/IPv4 ARP only (RFC 826), a sender
     * hardware address that is an individual one (our reply goes there; a group would make it
     * a broadcast) and a sender IP that is no martian (Linux's arp_process/ip_route_input:
     * multicast, 255.255.255.255, 127/8, 0/8 other than the RFC 5227 probe's 0.0.0.0). */
    if (!arp_is_ether_ipv4(arp) || mac_is_multicast(arp->sha) || ip4_is_martian_sender(arp->spa)) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    /* Replies are the kernel's business; gratuitous ARP (sender == target) announces
     * someone else's mapping and needs no answer. A probe (sender 0.0.0.0, RFC 5227 2.1.1)
     * is answered, as Linux does: the reply defends the VIP. */
    if (arp->oper != mx_htons(ARP_OP_REQUEST) || ip4_equal(arp->spa, arp->tpa))
        return XDP_PASS;

    vip_key_v4(&key, ifindex, arp->tpa);
    vip = vip_to_answer(&key, eth, mac_is_broadcast(eth->h_dest), &st);
    if (!vip)
        return XDP_PASS;

    arp_request_to_reply(eth, arp, vip->mac);
    if (st)
        st->replies += 1;
    return XDP_TX;
}

/* Answer a valid neighbour solicitation for a VIP with a neighbour advertisement. */
static __always_inline int handle_ns(struct xdp_md *ctx, void *data, void *data_end)
{
    struct ethhdr *eth = data;
    struct ipv6hdr *ip6 = HDR_AT(struct ipv6hdr, data, sizeof(struct ethhdr), data_end);
    struct ndp_msg *ns = HDR_AT(struct ndp_msg, data, sizeof(struct ethhdr) + sizeof(struct ipv6hdr),
                                data_end);
    struct ns_request req;
    struct vip_key key;
    struct vip_info *vip;
    struct vip_stats *st;
    __u32 ifindex = ctx->ingress_ifindex;
    __u64 frame_len = data_end - data;
    __u32 icmp_len;
    int dad;
    long delta;

    if (!ip6 || !ns) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    icmp_len = mx_ntohs(ip6->payload_len);  /* no extension headers: the payload is the NS */
    dad = ip6_is_unspecified((__u8 *)&ip6->saddr);
    /* Every validity rule first (all end the same way: passed, counted as malformed), then the
     * rules that merely make the NS someone else's business. RFC 4861 7.1.1: hop limit 255,
     * code 0, ICMP length >= 24 (and inside the frame), target not multicast, a DAD probe
     * (source ::) only to the solicited-node group; the source is no multicast address
     * (RFC 4291 2.7), nor ::1 or IPv4-mapped (Linux's ip6_rcv_core drops both); the Ethernet
     * source is an individual address (IEEE 802: our NA goes there); then the options and the
     * checksum (ns_options_and_checksum_valid). */
    if (ip6->hop_limit != NDP_HOP_LIMIT || ns->code != 0 || icmp_len < sizeof(struct ndp_msg) ||
        frame_len < sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + (__u64)icmp_len ||
        ns->target[0] == 0xff || ip6_is_invalid_source((__u8 *)&ip6->saddr) ||
        (dad && !ip6_is_solicited_node_of((__u8 *)&ip6->daddr, ns->target)) ||
        mac_is_multicast(eth->h_source) || !ns_options_and_checksum_valid(data, data_end, icmp_len, dad)) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    /* Neither address resolution (solicited-node multicast) nor a unicast NUD probe to the
     * target itself (MetalLB ignores the latter: metallb#2920; we answer it). */
    if (!dad && !ip6_is_solicited_node_of((__u8 *)&ip6->daddr, ns->target) &&
        !ip6_equal((__u8 *)&ip6->daddr, ns->target))
        return XDP_PASS;

    vip_key_v6(&key, ifindex, ns->target);
    vip = vip_to_answer(&key, eth, mac_is_multicast(eth->h_dest), &st);
    if (!vip)
        return XDP_PASS;

    req.dad = dad;
    mac_copy(req.src_mac, eth->h_source);
    ip6_copy(req.src_ip, &ip6->saddr);
    ip6_copy(req.target, ns->target);

    /* Make the frame exactly NA_FRAME_LEN long: grow at the head (XDP guarantees 256 bytes
     * of headroom in every mode, tail room is driver dependent) or trim the tail. All
     * packet pointers are invalid after either helper. */
    delta = (long)frame_len - NA_FRAME_LEN;
    if (delta < 0) {
        if (bpf_xdp_adjust_head(ctx, delta))
            return XDP_PASS;
    } else if (delta > 0) {
        if (bpf_xdp_adjust_tail(ctx, -delta))
            return XDP_PASS;
    }
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + NA_FRAME_LEN > data_end)
        return XDP_ABORTED;  /* cannot happen after a successful resize; never sends garbage */

    build_na(data, &req, vip->mac);
    if (st)
        st->replies += 1;
    return XDP_TX;
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, void *data, void *data_end)
{
    struct ipv6hdr *ip6 = HDR_AT(struct ipv6hdr, data, sizeof(struct ethhdr), data_end);
    __u8 *icmp_type;
    struct vip_key key;

    if (!ip6 || ip6->version != 6) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    if (ip6->nexthdr == IPPROTO_ICMP6) {
        /* Neighbour discovery (RFC 4861 types 133-137) is not traffic: never in rx_packets. */
        icmp_type = HDR_AT(__u8, data, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), data_end);
        if (icmp_type && *icmp_type == ICMP6_NEIGHBOUR_SOLICIT)
            return handle_ns(ctx, data, data_end);
        if (icmp_type && *icmp_type >= ICMP6_ND_FIRST && *icmp_type <= ICMP6_ND_LAST)
            return XDP_PASS;
    }
    vip_key_v6(&key, ctx->ingress_ifindex, (__u8 *)&ip6->daddr);
    count_vip_traffic(&key, data_end - data);
    return XDP_PASS;
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, void *data, void *data_end)
{
    struct iphdr *ip = HDR_AT(struct iphdr, data, sizeof(struct ethhdr), data_end);
    struct vip_key key;

    if (!ip || ip->version != 4) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    vip_key_v4(&key, ctx->ingress_ifindex, (__u8 *)&ip->daddr);
    count_vip_traffic(&key, data_end - data);
    return XDP_PASS;
}

/* The whole program; inlined into xdp_vip below (and into bench_harness.c's wrappers, so the
 * benchmark measures exactly this code). */
static __always_inline int vip_frame(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = HDR_AT(struct ethhdr, data, 0, data_end);
    __u16 type;

    if (!eth) {
        count_global(G_PASS_MALFORMED);
        return XDP_PASS;
    }
    type = mx_ntohs(eth_proto(eth));
    switch (type) {
    case ETHERTYPE_ARP:
        return handle_arp(ctx, data, data_end);
    case ETHERTYPE_IPV6:
        return handle_ipv6(ctx, data, data_end);
    case ETHERTYPE_IPV4:
        return handle_ipv4(ctx, data, data_end);
    case ETHERTYPE_8021Q:
    case ETHERTYPE_8021AD:
        count_global(G_PASS_VLAN);  /* see the header comment: never answered */
        return XDP_PASS;
    default:
        return XDP_PASS;  /* other EtherTypes and 802.3 length fields */
    }
}

int xdp_vip(struct xdp_md *ctx)
{
    return vip_frame(ctx);
}

/* The agent's heartbeat. Never attached: the agent runs it through BPF_PROG_TEST_RUN, so the
 * heartbeat is stamped with the kernel's own jiffies (what agent_alive() compares) and
 * CLOCK_MONOTONIC (for people reading the map, and for measuring HZ where the kernel config is
 * not readable). */
int xdp_heartbeat(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct liveness *l = mx_liveness.lookup(&zero);

    if (l) {
        l->heartbeat_jiffies = bpf_jiffies64();
        l->heartbeat_ns = bpf_ktime_get_ns();
    }
    return XDP_PASS;
}

#ifdef MX_BENCH_HARNESS
/* Benchmark wrappers (bench/xdp_prog_ns.py builds with -DMX_BENCH_HARNESS; the agent never does).
 * They must be defined in this file: BCC turns only the main file's functions into programs and
 * rewrites map calls only there. See bench_harness.h. */
#include "bench_harness.h"

int xdp_bench_arp(struct xdp_md *ctx)
{
    return run_restoring(ctx, BENCH_ARP_LEN, 1);
}

int xdp_bench_arp_base(struct xdp_md *ctx)
{
    return run_restoring(ctx, BENCH_ARP_LEN, 0);
}

int xdp_bench_ns(struct xdp_md *ctx)
{
    return run_restoring(ctx, BENCH_NS_LEN, 1);
}

int xdp_bench_ns_base(struct xdp_md *ctx)
{
    return run_restoring(ctx, BENCH_NS_LEN, 0);
}
#endif
