/* bench_sink.bpf.c: the benchmark's sink on the generator's interface. Counts every frame the forwarder
 * under test sent back, checks it carries the expected rewrite, records the latency of timestamped probes,
 * and drops it (XDP_DROP) so the kernel's stack costs nothing. Non-IPv4 frames pass uncounted. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "bench_shared.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, XDB_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} sink_counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} sink_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XDB_EXPECT_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} sink_expect SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, XDB_LATENCY_BUCKETS);
    __type(key, __u32);
    __type(value, __u64);
} sink_latency SEC(".maps");

static __always_inline void add(__u32 key, __u64 amount)
{
    __u64 *value = bpf_map_lookup_elem(&sink_counters, &key);
    if (value)
        *value += amount;
}

static __always_inline int expected(__u64 wanted)
{
    for (__u32 i = 0; i < XDB_EXPECT_SLOTS; i++) {
        __u32 key = i;
        __u64 *value = bpf_map_lookup_elem(&sink_expect, &key);
        if (value && *value != 0 && *value == wanted) {
            add(XDB_HITS + i, 1);
            return 1;
        }
    }
    return 0;
}

static __always_inline __u64 mac48(const unsigned char *mac)
{
    __u64 value = 0;
    __builtin_memcpy(&value, mac, 6);
    return value;
}

/* Records a probe's latency when the L4 payload at `payload` starts with the probe magic. */
static __always_inline void probe(void *payload, void *end)
{
    struct { __u32 magic; __u32 pad; __u64 sent; } *p = payload;
    if ((void *)(p + 1) > end || p->magic != XDB_PROBE_MAGIC)
        return;
    __u64 now = bpf_ktime_get_ns();
    __u64 delta = now > p->sent ? now - p->sent : 0;
    __u32 bucket = delta / 1000;
    if (bucket >= XDB_LATENCY_BUCKETS)
        bucket = XDB_LATENCY_BUCKETS - 1;
    __u64 *count = bpf_map_lookup_elem(&sink_latency, &bucket);
    if (count)
        *count += 1;
    add(XDB_PROBES, 1);
    __u32 key = XDB_MAX_NS;
    __u64 *max = bpf_map_lookup_elem(&sink_counters, &key);
    if (max && delta > *max)
        *max = delta;
}

SEC("xdp")
int xdirector_bench_sink(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    /* Only IPv4 is the forwarders' traffic; ARP and neighbour discovery go to the kernel uncounted. */
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    __u32 zero = 0;
    __u32 *config = bpf_map_lookup_elem(&sink_config, &zero);
    __u32 mode = config ? *config : XDB_MODE_ANY;
    struct iphdr *ip = (void *)(eth + 1);
    /* The generator's flows come from 10.0.0.0/8 (a tunnel's outer source is the director's): anything
     * else is the namespaces' own traffic, not counted. */
    if ((void *)(ip + 1) <= end && mode != XDB_MODE_TUN && (bpf_ntohl(ip->saddr) >> 24) != 10)
        return XDP_PASS;
    add(XDB_RX, 1);
    add(XDB_RX_BYTES, (__u64)(end - data));
    if ((void *)(ip + 1) > end || ip->ihl < 5) {
        add(XDB_BAD, 1);
        return XDP_DROP;
    }
    int ok = 1;
    if (mode == XDB_MODE_DR)
        ok = expected(mac48(eth->h_dest));
    if (mode == XDB_MODE_TUN)
        ok = expected((__u64)ip->daddr);
    void *l4 = (void *)ip + ip->ihl * 4;
    /* A tunnel's inner IPv4 header (IPIP) directly follows: the probe is inside it. */
    if (ip->protocol == IPPROTO_IPIP) {
        struct iphdr *inner = l4;
        if ((void *)(inner + 1) > end || inner->ihl != 5) {
            add(XDB_BAD, 1);
            return XDP_DROP;
        }
        ip = inner;
        l4 = (void *)(inner + 1);
    }
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > end) {
            add(XDB_BAD, 1);
            return XDP_DROP;
        }
        if (mode == XDB_MODE_NAT)
            ok = expected((__u64)ip->daddr | ((__u64)tcp->dest << 32));
        if (tcp->doff == 5)
            probe((void *)(tcp + 1), end);
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > end) {
            add(XDB_BAD, 1);
            return XDP_DROP;
        }
        if (mode == XDB_MODE_NAT)
            ok = expected((__u64)ip->daddr | ((__u64)udp->dest << 32));
        probe((void *)(udp + 1), end);
    }
    add(ok ? XDB_OK : XDB_BAD, 1);
    return XDP_DROP;
}
