/* xdp_tx.c - the benchmark's packet generator (bench/xdp_flood.py), never attached.
 *
 * BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) runs this program on
 * copies of one frame, and XDP_TX sends each copy out of the interface named as the run's
 * ingress_ifindex, the way xdp-tools' xdp-trafficgen does: on a veth the copies reach the peer
 * as XDP frames, with no socket buffer on either side, as frames from a NIC would.
 *
 * The kernel fills a page with the frame only the first time a run uses that page; a page that
 * comes back to the pool (after the responder rewrote it into a reply in place and the reply
 * was consumed) keeps the reply. So the frame is written from the template every time.
 */
#include <uapi/linux/bpf.h>

#define TEMPLATE_LEN 60   /* a padded ARP request */

struct template {
    __u8 bytes[64];
};

BPF_ARRAY(mx_tx_template, struct template, 1);

int xdp_tx(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct template *t = mx_tx_template.lookup(&zero);

    if (!t || data + TEMPLATE_LEN > data_end)
        return XDP_ABORTED;
    __builtin_memcpy(data, t->bytes, TEMPLATE_LEN);
    return XDP_TX;
}
