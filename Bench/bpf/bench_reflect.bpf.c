/* bench_reflect.bpf.c: the kernel's ceiling for the path. Swaps the Ethernet addresses of IPv4 frames and
 * sends them back out the interface they came in on (XDP_TX); everything else goes to the kernel. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bench_shared.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} reflect_counters SEC(".maps");

SEC("xdp")
int xdirector_bench_reflect(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    unsigned char mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, mac, ETH_ALEN);
    __u32 key = XDB_RX;
    __u64 *count = bpf_map_lookup_elem(&reflect_counters, &key);
    if (count)
        *count += 1;
    return XDP_TX;
}
