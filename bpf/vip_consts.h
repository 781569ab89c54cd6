/* vip_consts.h - limits, flags and protocol numbers used by xdp_vip.c.
 *
 * Every limit can be overridden at compile time (agent/dataplane.py passes cflags such as
 * -DMAX_VIPS=8192); the version hash that guards pinned maps includes those cflags, so a
 * changed limit replaces the pinned maps instead of reusing maps of the wrong size.
 */
#ifndef METALXDP_VIP_CONSTS_H
#define METALXDP_VIP_CONSTS_H

/* (VIP, interface) pairs this node can announce at once. Cilium's L2 responder map holds 4096. */
#ifndef MAX_VIPS
#define MAX_VIPS 4096
#endif

/* vip_info.flags: the Service has externalTrafficPolicy=Local and no ready endpoint on this
 * node, so traffic that reaches us for it is "misdirected" (the leader should not be us). */
#define VIP_F_ETP_LOCAL_MISDIRECT (1U << 0)
/* vip_info.flags: the VIP moved to another live node (planned handoff). Broadcast ARP and
 * multicast NS are the new owner's to answer; this node only answers ARP/NS sent to its own
 * MAC (the refresh probes of clients whose caches still point here) and keeps counting the
 * VIP's traffic, until the agent sees it go quiet and withdraws the VIP. */
#define VIP_F_HANDOFF (1U << 1)

/* vip_key.family (not AF_* so the key reads the same in bpftool dumps on any libc). */
#define VIP_FAMILY_V4 4
#define VIP_FAMILY_V6 6

/* EtherTypes (IEEE registry). */
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_IPV6 0x86DD
#define ETHERTYPE_8021Q 0x8100  /* VLAN tag */
#define ETHERTYPE_8021AD 0x88A8 /* QinQ outer tag */
#define ETHERTYPE_MIN 0x0600    /* below this the field is an 802.3 length, not a type */

#define MAC_LEN 6

/* ARP (RFC 826) for Ethernet + IPv4 only. */
#define ARP_HTYPE_ETHER 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

/* IPv6 neighbour discovery (RFC 4861). */
#define IPPROTO_ICMP6 58
#define ICMP6_NEIGHBOUR_SOLICIT 135
#define ICMP6_NEIGHBOUR_ADVERT 136
#define ICMP6_ND_FIRST 133             /* router solicitation ... */
#define ICMP6_ND_LAST 137              /* ... redirect: the neighbour discovery types */
#define NDP_HOP_LIMIT 255              /* 7.1.1: an NS with any other hop limit is invalid */
#define NDP_OPT_SOURCE_LLADDR 1
#define NDP_OPT_UNIT 8                 /* 4.6: option lengths count 8-byte units */
/* The option bytes (after the 24-byte NS body) the program walks and sums. A longer NS (SEND's
 * CGA and signature options, RFC 3971) is passed, counted as malformed: Ethernet NS carry one
 * 8-byte option, or two with a DAD nonce (RFC 7527). */
#ifndef NDP_MAX_OPT_BYTES
#define NDP_MAX_OPT_BYTES 256
#endif
#define NDP_OPT_TARGET_LLADDR 2
#define NA_FLAG_ROUTER 0x80000000U     /* host order; we are not a router: always 0 */
#define NA_FLAG_SOLICITED 0x40000000U  /* answer to an NS with a unicast source */
#define NA_FLAG_OVERRIDE 0x20000000U   /* solicited NA: 0 like MetalLB; GARP NA from Python: 1 */

/* The NA we send: Ethernet 14 + IPv6 40 + NA 24 + target link-layer option 8. */
#define NA_FRAME_LEN 86
/* Offset of the IPv6 source address: an NDP checksum covers it, the destination and the
 * ICMPv6 message, contiguous from here to the end of the message. */
#define NA_CSUM_START 22
#define NA_ICMP6_LEN 32
/* Offset of an NS's first option: Ethernet 14 + IPv6 40 + NS body 24. */
#define NS_OPTS_OFF 78

/* Indexes into the mx_global per-CPU counter array (program-wide, not per VIP). */
#define G_PASS_VLAN 0       /* 802.1Q/802.1ad frame: passed untouched, never answered */
#define G_PASS_MALFORMED 1  /* truncated or invalid ARP/IPv4/IPv6/NS frame (docs/xdp.md lists the rules) */
#define G_GATED 2           /* request for a VIP left unanswered: agent heartbeat too old */
#define G_NOT_FOR_US 3      /* request for a VIP, but to another host's MAC */
#define G_COUNTERS 4
/* Replies are counted per VIP only (vip_stats.replies): no global counter on the hot path. */

#endif /* METALXDP_VIP_CONSTS_H */
