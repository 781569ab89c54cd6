/* xdp_pass.c - a program that passes every frame. Attached natively to the peer of a veth
 * whose other end runs xdp_vip.c: veth delivers XDP_TX frames only when the peer has NAPI
 * enabled, which an attached XDP program does (see docs/xdp.md). Not needed on real NICs. */
#include <uapi/linux/bpf.h>

int xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
