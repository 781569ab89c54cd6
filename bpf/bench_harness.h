/* bench_harness.h - for bench/xdp_prog_ns.py only (built with -DMX_BENCH_HARNESS, never by the
 * agent; the wrappers themselves sit at the end of xdp_vip.c).
 *
 * BPF_PROG_TEST_RUN with repeat = N runs a program N times on ONE buffer: a program that rewrites
 * a request into its reply sees that reply from the second run on, so the kernel's average would
 * measure the cheap "reply to a reply" path. run_restoring() saves the first LEN bytes of the
 * frame, runs vip_frame() (inlined: the same code as the attached program) and writes the bytes
 * back, so every run sees the original request. The same wrapper around no program (with_prog 0)
 * costs the save, the restore and the test-run loop; the benchmark subtracts it.
 *
 * LEN covers every byte the reply paths write: ARP (a 60-byte padded request; the reply rewrites
 * bytes 0..41) and NS with a source link-layer option (86 bytes, rewritten whole into an NA of
 * the same length, so no head/tail adjustment happens).
 */
#ifndef METALXDP_BENCH_HARNESS_H
#define METALXDP_BENCH_HARNESS_H

#define BENCH_ARP_LEN 60
#define BENCH_NS_LEN 86
#define BENCH_MAX_WORDS 11  /* 86 bytes rounded up to 8-byte words */

/* Copy len bytes (a compile-time constant after inlining) a word at a time, then the tail:
 * byte-by-byte copies would cost more than the program being measured. */
static __always_inline void bench_copy(void *dst, const void *src, const int len)
{
    __u64 *d = dst;
    const __u64 *s = src;

#pragma unroll
    for (int i = 0; i < BENCH_MAX_WORDS; i++)
        if ((i + 1) * 8 <= len)
            d[i] = s[i];
    if (len % 8 >= 4)
        *(__u32 *)(dst + len / 8 * 8) = *(const __u32 *)(src + len / 8 * 8);
    if (len % 4 >= 2)
        *(__u16 *)(dst + len / 4 * 4) = *(const __u16 *)(src + len / 4 * 4);
}

static __always_inline int run_restoring(struct xdp_md *ctx, const int len, const int with_prog)
{
    __u64 saved[BENCH_MAX_WORDS];
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    int verdict = XDP_TX;

    if (len > BENCH_NS_LEN || data + len > data_end)
        return XDP_ABORTED;
    bench_copy(saved, data, len);
    /* without this the compiler sees "write back what was just read" in the baseline and
     * drops both copies, and the subtraction would charge the copies to the program */
    asm volatile("" ::: "memory");
    if (with_prog)
        verdict = vip_frame(ctx);
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + len > data_end)
        return XDP_ABORTED;
    bench_copy(data, saved, len);
    return verdict;
}

#endif /* METALXDP_BENCH_HARNESS_H */
