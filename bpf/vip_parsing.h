/* vip_parsing.h - bounds-checked parsing and in-place frame building, no map access (BCC
 * rewrites map calls only in the main file, so everything touching a map is in xdp_vip.c).
 *
 * Convention: a parser returns NULL when the header does not fit in [data, data_end); the
 * caller then passes the frame untouched.
 */
#ifndef METALXDP_VIP_PARSING_H
#define METALXDP_VIP_PARSING_H

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define mx_htons(x) ((__be16)__builtin_bswap16((__u16)(x)))
#define mx_htonl(x) ((__be32)__builtin_bswap32((__u32)(x)))
#else
#define mx_htons(x) ((__be16)(x))
#define mx_htonl(x) ((__be32)(x))
#endif
#define mx_ntohs(x) mx_htons(x)
#define mx_ntohl(x) mx_htonl(x)

/* A header of type T at byte offset off, or NULL if it is not entirely inside the frame. */
#define HDR_AT(T, data, off, data_end) \
    ((void *)(data) + (off) + sizeof(T) > (void *)(data_end) ? (T *)0 : (T *)((void *)(data) + (off)))

/* MACs and IPv4 addresses are read and written 16 bits at a time. Every one of them sits at an
 * even offset of the frame (Ethernet 0 and 6, ARP sha 22, spa 28, tha 32, tpa 38, IPv4 daddr
 * 30, IPv6 addresses 22 and 38, NS target 62), frames start 2-byte aligned (XDP's headroom) and
 * stack/map copies are naturally aligned; plain access to a byte array (or to struct ethhdr,
 * which the kernel declares packed) costs one load and one store per byte instead. */
static __always_inline int mac_is_multicast(const __u8 *mac)
{
    return mac[0] & 1;  /* I/G bit; covers broadcast too */
}

static __always_inline int mac_is_broadcast(const void *mac)
{
    const __u16 *m = mac;
    return (__u16)(m[0] & m[1] & m[2]) == 0xffff;
}

static __always_inline int mac_equal(const void *a, const void *b)
{
    const __u16 *x = a, *y = b;
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2])) == 0;
}

static __always_inline void mac_copy(void *dst, const void *src)
{
    __u16 *d = dst;
    const __u16 *s = src;
    d[0] = s[0];
    d[1] = s[1];
    d[2] = s[2];
}

static __always_inline void ip4_copy(void *dst, const void *src)
{
    __u16 *d = dst;
    const __u16 *s = src;
    d[0] = s[0];
    d[1] = s[1];
}

static __always_inline int ip4_equal(const void *a, const void *b)
{
    const __u16 *x = a, *y = b;
    return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

/* The EtherType (network order) of the frame at eth. */
static __always_inline __be16 eth_proto(const struct ethhdr *eth)
{
    return *(const __be16 *)((const void *)eth + 12);
}

static __always_inline int ip6_is_unspecified(const __u8 *a)
{
    const __u32 *w = (const __u32 *)a;
    return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline int ip6_equal(const __u8 *a, const __u8 *b)
{
    const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* A source no IPv6 packet may carry: multicast (RFC 4291 2.7), or one Linux's ip6_rcv_core drops on
 * any interface but lo: ::1 (RFC 4291 2.5.3) and IPv4-mapped ::ffff:0:0/96. */
static __always_inline int ip6_is_invalid_source(const __u8 *a)
{
    const __u32 *w = (const __u32 *)a;

    if (a[0] == 0xff)
        return 1;
    if ((w[0] | w[1]) != 0)
        return 0;  /* every global, ULA and link-local source ends here */
    return w[2] == mx_htonl(0x0000ffff) || (w[2] == 0 && w[3] == mx_htonl(1));
}

/* htype 1 and ptype 0x0800 (one 32-bit word), hlen 6 and plen 4 (16 bits): RFC 826 for
 * Ethernet/IPv4, in two loads instead of four. */
static __always_inline int arp_is_ether_ipv4(const struct arp_eth *arp)
{
    return *(const __be32 *)&arp->htype == mx_htonl(ARP_HTYPE_ETHER << 16 | ETHERTYPE_IPV4) &&
           *(const __be16 *)&arp->hlen == mx_htons(MAC_LEN << 8 | 4);
}

/* An ARP sender IP that Linux treats as martian (ip_route_input_slow: multicast 224/4, limited
 * broadcast, 127/8, 0/8), except 0.0.0.0 itself: the sender of an RFC 5227 probe. 240/4 is
 * not martian to Linux, nor here. */
static __always_inline int ip4_is_martian_sender(const __u8 *a)
{
    __u8 first = a[0];

    if (first == 0)
        return (a[1] | a[2] | a[3]) != 0;
    if (first == 255)
        return (a[1] & a[2] & a[3]) == 255;
    return first == 127 || (first & 0xf0) == 224;
}

/* dst is the solicited-node multicast address of target: ff02::1:ff00:0/104 + low 24 bits. */
static __always_inline int ip6_is_solicited_node_of(const __u8 *dst, const __u8 *target)
{
    const __u32 *w = (const __u32 *)dst;
    __u32 low24 = ((const __u32 *)target)[3] & mx_htonl(0x00ffffff);
    return w[0] == mx_htonl(0xff020000) && w[1] == 0 && w[2] == mx_htonl(0x00000001) &&
           w[3] == (mx_htonl(0xff000000) | low24);
}

static __always_inline void vip_key_v4(struct vip_key *k, __u32 ifindex, const __u8 *ip)
{
    __builtin_memset(k, 0, sizeof(*k));
    k->ifindex = ifindex;
    k->family = VIP_FAMILY_V4;
    ip4_copy(k->addr, ip);
}

static __always_inline void vip_key_v6(struct vip_key *k, __u32 ifindex, const __u8 *ip)
{
    __u32 *d = (__u32 *)k->addr;
    const __u32 *s = (const __u32 *)ip;

    k->ifindex = ifindex;
    k->family = VIP_FAMILY_V6;
    k->pad[0] = k->pad[1] = k->pad[2] = 0;
    d[0] = s[0];
    d[1] = s[1];
    d[2] = s[2];
    d[3] = s[3];
}

/* 8 bytes (as loaded, host order) folded into a running one's-complement sum: their two 32-bit
 * halves into 64 bits, so no carry is lost before the final fold (RFC 1071 2.(B): the sum of
 * host-order words, stored back in host order, is byte-order independent). */
static __always_inline __u64 csum_add64(__u64 sum, __u64 x)
{
    return sum + (x & 0xffffffff) + (x >> 32);
}

/* One 8-byte unit of packet data into the sum (at an offset that is 8-aligned counting
 * NET_IP_ALIGN, see ip6_copy). */
static __always_inline __u64 csum_add_unit(__u64 sum, const void *p)
{
    return csum_add64(sum, *(const __u64 *)p);
}

/* The 16-bit one's-complement sum (host order) of a 64-bit accumulator (RFC 1071 2.(B)). */
static __always_inline __u32 csum_fold64(__u64 sum)
{
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u32)sum;
}

/* RFC 4861 7.1.1 on what follows the 24-byte NS body, and the ICMPv6 checksum, for an NS whose
 * icmp_len bytes (>= 24) are all inside the frame:
 *  - every option has a length > 0 and the options fill the message exactly, none running past
 *    it (7.1.1, and Linux's ndisc_parse_options, which drops the NS otherwise);
 *  - the first source link-layer option is 8 bytes long (RFC 2464 6 for Ethernet; Linux drops
 *    an NS whose SLLAO has another length, and ignores later duplicates);
 *  - a DAD probe carries no source link-layer option at all (7.1.1), wherever it sits;
 *  - the checksum over the pseudo-header (RFC 8200 8.1) and the message is right (RFC 4443 2.3).
 * Option lengths count 8-byte units, so once the options are known to fill the message it is
 * summed a unit at a time: the source and destination addresses and the NS body are the 7 units
 * at [22, 78), the options follow. At most NDP_MAX_OPT_BYTES of options (longer: invalid here). */
static __always_inline int ns_options_and_checksum_valid(const void *data, const void *data_end,
                                                        __u32 icmp_len, int dad)
{
    const void *opts = data + NS_OPTS_OFF;
    __u32 opt_bytes = icmp_len - sizeof(struct ndp_msg);
    __u32 next_opt = 0;  /* offset (from opts) of the next option header */
    int seen_sllao = 0;
    __u64 sum;

    if ((opt_bytes & (NDP_OPT_UNIT - 1)) || opt_bytes > NDP_MAX_OPT_BYTES)
        return 0;
    if (opts > data_end)
        return 0;  /* the caller checked the NS body: cannot happen */

    /* The walk, an option at a time (each is >= 8 bytes, so NDP_MAX_OPT_BYTES / 8 of them at
     * most). Kept apart from the sum below: one loop branching on both would give the verifier
     * a state per combination of option boundaries. */
    for (int i = 0; i < NDP_MAX_OPT_BYTES / NDP_OPT_UNIT; i++) {
        const __u8 *opt;
        __u8 type, len;

        if (next_opt >= opt_bytes || next_opt >= NDP_MAX_OPT_BYTES)
            break;
        opt = opts + next_opt;
        if ((const void *)opt + 2 > data_end)
            return 0;  /* cannot happen: the caller checked icmp_len against the frame */
        type = opt[0];
        len = opt[1];
        if (len == 0)
            return 0;
        if (type == NDP_OPT_SOURCE_LLADDR) {
            if (dad || (!seen_sllao && len != 1))
                return 0;
            seen_sllao = 1;
        }
        next_opt += (__u32)len * NDP_OPT_UNIT;
    }
    if (next_opt != opt_bytes)
        return 0;  /* the last option runs past the message */

    sum = mx_htons(icmp_len) + mx_htons(IPPROTO_ICMP6);
#pragma unroll
    for (int i = 0; i < (NS_OPTS_OFF - NA_CSUM_START) / 8; i++)
        sum = csum_add_unit(sum, data + NA_CSUM_START + i * 8);
    for (__u32 off = 0; off < NDP_MAX_OPT_BYTES; off += NDP_OPT_UNIT) {
        const void *unit = opts + off;

        if (off >= opt_bytes)
            break;
        if (unit + NDP_OPT_UNIT > data_end)
            return 0;  /* cannot happen, as above */
        sum = csum_add_unit(sum, unit);
    }
    return csum_fold64(sum) == 0xffff;
}

/* Turn an ARP request (already validated) into the reply, in place: same frame length. */
static __always_inline void arp_request_to_reply(struct ethhdr *eth, struct arp_eth *arp,
                                                 const __u8 *our_mac)
{
    __u16 vip[2];

    ip4_copy(vip, arp->tpa);
    mac_copy(eth->h_dest, arp->sha);  /* like the kernel: reply to the sender hardware address */
    mac_copy(eth->h_source, our_mac);
    arp->oper = mx_htons(ARP_OP_REPLY);
    mac_copy(arp->tha, arp->sha);
    ip4_copy(arp->tpa, arp->spa);
    mac_copy(arp->sha, our_mac);
    ip4_copy(arp->spa, vip);
}

/* IPv6 addresses are copied 8 bytes at a time. In the frame they sit at offsets 22, 38 and 62:
 * on architectures that need aligned access the kernel starts packet data NET_IP_ALIGN (2)
 * bytes into a word, which makes all three 8-byte aligned (the verifier checks packet access
 * with that offset); x86 and arm64 do not care. The stack copies are u64 arrays. */
static __always_inline void ip6_copy(void *dst, const void *src)
{
    __u64 *d = dst;
    const __u64 *s = src;
    d[0] = s[0];
    d[1] = s[1];
}

/* What the NA needs from the NS, copied out before the frame is resized. */
struct ns_request {
    __u64 src_ip[2];
    __u64 target[2];
    __u16 src_mac[3];
    __u8 dad;  /* source was ::, answer to all-nodes with S=0 (RFC 4861 7.2.4) */
    __u8 pad;
};

/* Write the whole NA into a frame of exactly NA_FRAME_LEN bytes starting at data, with its
 * ICMPv6 checksum (RFC 4443 2.3 over the RFC 8200 8.1 pseudo-header). The checksum is summed
 * from the values written, not read back from the frame: the message is the target twice
 * (source address and target field), the destination, our MAC and constants. Every store is a
 * 2, 4 or 8-byte one at an offset of that alignment (counting NET_IP_ALIGN, see ip6_copy); the
 * kernel's packed struct ethhdr/ipv6hdr fields would be written a byte at a time. */
static __always_inline void build_na(void *data, const struct ns_request *req, const __u8 *our_mac)
{
    const __u16 *mac = (const __u16 *)our_mac;
    __u64 sum = mx_htons(NA_ICMP6_LEN) + mx_htons(IPPROTO_ICMP6) +         /* pseudo-header */
                mx_htons(ICMP6_NEIGHBOUR_ADVERT << 8) +                    /* type, code */
                mx_htons(NDP_OPT_TARGET_LLADDR << 8 | 1) + mac[0] + mac[1] + mac[2];  /* option */

    /* Ethernet: to the solicitor, or to 33:33:00:00:00:01 (ff02::1, RFC 2464 7) for DAD */
    if (req->dad) {
        *(__be16 *)(data + 0) = mx_htons(0x3333);
        *(__be16 *)(data + 2) = 0;
        *(__be16 *)(data + 4) = mx_htons(1);
    } else {
        mac_copy(data, req->src_mac);
    }
    mac_copy(data + 6, our_mac);
    *(__be16 *)(data + 12) = mx_htons(ETHERTYPE_IPV6);

    /* IPv6: version 6, traffic class 0, flow label 0; payload length, next header, hop limit;
     * from the VIP itself (never link-local), to the solicitor or to ff02::1 */
    *(__be32 *)(data + 14) = mx_htonl(0x60000000);
    *(__be32 *)(data + 18) = mx_htonl(NA_ICMP6_LEN << 16 | IPPROTO_ICMP6 << 8 | NDP_HOP_LIMIT);
    ip6_copy(data + 22, req->target);
    sum = csum_add64(csum_add64(sum, req->target[0]), req->target[1]);
    if (req->dad) {
        *(__be32 *)(data + 38) = mx_htonl(0xff020000);
        *(__be32 *)(data + 42) = 0;
        *(__be32 *)(data + 46) = 0;
        *(__be32 *)(data + 50) = mx_htonl(1);
        sum += mx_htons(0xff02) + mx_htons(1);
    } else {
        ip6_copy(data + 38, req->src_ip);
        sum = csum_add64(csum_add64(sum, req->src_ip[0]), req->src_ip[1]);
        sum += mx_htons(NA_FLAG_SOLICITED >> 16);
    }

    /* NA: type 136, code 0, R=0, S as above, O=0 (MetalLB), the target, our MAC */
    *(__be16 *)(data + 54) = mx_htons(ICMP6_NEIGHBOUR_ADVERT << 8);
    *(__be32 *)(data + 58) = req->dad ? 0 : mx_htonl(NA_FLAG_SOLICITED);
    ip6_copy(data + 62, req->target);
    sum = csum_add64(csum_add64(sum, req->target[0]), req->target[1]);
    *(__be16 *)(data + 78) = mx_htons(NDP_OPT_TARGET_LLADDR << 8 | 1);
    mac_copy(data + 80, our_mac);
    *(__u16 *)(data + 56) = ~csum_fold64(sum) & 0xffff;
}

#endif /* METALXDP_VIP_PARSING_H */
