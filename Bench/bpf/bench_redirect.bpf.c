/* bench_redirect.bpf.c: the C AF_XDP reference's program. Hands every IPv4 frame to the AF_XDP socket of
 * the queue it arrived on, and everything else (ARP, IPv6 neighbour discovery) to the kernel. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u32);
} bench_xsks SEC(".maps");

SEC("xdp")
int xdirector_bench_redirect(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    return bpf_redirect_map(&bench_xsks, ctx->rx_queue_index, XDP_PASS);
}
