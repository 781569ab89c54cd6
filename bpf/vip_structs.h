/* vip_structs.h - map keys/values (read from Python through BCC's generated ctypes, never
 * through hand-kept copies) and the wire layouts of the headers the program parses.
 */
#ifndef METALXDP_VIP_STRUCTS_H
#define METALXDP_VIP_STRUCTS_H

/* A VIP announced on one interface. IPv4 addresses sit in addr[0..3], addr[4..15] are zero;
 * both in network byte order. Padding is explicit so a memset key hashes the same everywhere. */
struct vip_key {
    __u32 ifindex;
    __u8 family;  /* VIP_FAMILY_V4 or VIP_FAMILY_V6 */
    __u8 pad[3];
    __u8 addr[16];
};

/* Everything the answer needs in the one hash lookup the hot path does. */
struct vip_info {
    __u32 flags;        /* VIP_F_* */
    __u32 slot;         /* index of this VIP's counters in mx_stats (userspace allocates) */
    __u8 mac[MAC_LEN];  /* the MAC to answer with: the interface's (ifindex in the key) */
    __u8 pad[2];
};

/* Per VIP slot, per CPU (summed in userspace). Bytes are whole Ethernet frames as XDP sees them
 * (destination MAC to end of payload, no FCS). */
struct vip_stats {
    __u64 rx_packets;   /* IPv4/IPv6 packets to the VIP (not ARP, not ICMPv6 types 133-137) */
    __u64 rx_bytes;
    __u64 requests;     /* valid ARP requests / neighbour solicitations for the VIP */
    __u64 replies;      /* ARP replies / neighbour advertisements sent by XDP_TX */
    __u64 misdirected;  /* packets to a VIP flagged VIP_F_ETP_LOCAL_MISDIRECT */
};

/* Split-brain guard: answers stop once jiffies - heartbeat_jiffies > max_age_jiffies
 * (max_age_jiffies 0: gate off). xdp_heartbeat() writes the heartbeat_* fields; the agent writes
 * the window in both units (ns as asked, jiffies as compared) and the HZ it converted with. */
struct liveness {
    __u64 heartbeat_ns;       /* CLOCK_MONOTONIC of the last heartbeat */
    __u64 max_age_ns;         /* the window the agent asked for */
    __u64 heartbeat_jiffies;  /* jiffies of the last heartbeat */
    __u64 max_age_jiffies;    /* the window in jiffies: what the program compares */
    __u64 hz;                 /* the kernel's HZ the agent used for the conversion */
};

/* Version of the program + map layout that created the pinned maps (see dataplane.py). */
struct meta {
    __u64 version;
};

/* ---- wire formats ---------------------------------------------------------------------- */

/* ARP body for Ethernet/IPv4 (RFC 826): 28 bytes. Addresses as byte arrays: spa sits at an
 * offset that is not 4-aligned. */
struct arp_eth {
    __be16 htype;
    __be16 ptype;
    __u8 hlen;
    __u8 plen;
    __be16 oper;
    __u8 sha[MAC_LEN];
    __u8 spa[4];
    __u8 tha[MAC_LEN];
    __u8 tpa[4];
};

/* Neighbour solicitation / advertisement (RFC 4861 4.3, 4.4): 24 bytes before options. */
struct ndp_msg {
    __u8 type;
    __u8 code;
    __be16 checksum;
    __be32 flags;  /* NA: R, S, O in the top bits; NS: reserved */
    __u8 target[16];
};

/* Source/target link-layer address option for Ethernet (RFC 4861 4.6.1): 8 bytes. */
struct ndp_lladdr_opt {
    __u8 type;
    __u8 len;  /* in units of 8 bytes */
    __u8 addr[MAC_LEN];
};

#endif /* METALXDP_VIP_STRUCTS_H */
