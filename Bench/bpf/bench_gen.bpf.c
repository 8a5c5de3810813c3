/* bench_gen.bpf.c: the "live frames" generator. User space runs it with BPF_PROG_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES on copies of one template frame; it writes the per-packet fields (source
 * address and port, TCP flags, both checksums, finished from sums precomputed over the fixed fields) and
 * sends the frame out the generator's interface (XDP_TX), with no socket buffer on the way. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

struct gen_config {
    __u32 flows_per_queue; /* 0: every packet is a new flow (a SYN flood for TCP) */
    __u32 queues;          /* flow f goes to queue f mod queues: the CPU's, as veth picks it */
    __u32 ip_base_sum;     /* RFC 1071 sums of the template without the per-packet fields */
    __u32 l4_base_sum;
    __u32 tcp;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct gen_config);
} gen_config SEC(".maps");

/* Packets generated on each CPU: the generator's count of what it offered. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} gen_sent SEC(".maps");

static __always_inline __u16 finish(__u32 sum)
{
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    return (__u16)~sum;
}

SEC("xdp")
int xdirector_bench_gen(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct gen_config *config = bpf_map_lookup_elem(&gen_config, &zero);
    __u64 *sent = bpf_map_lookup_elem(&gen_sent, &zero);
    /* Up to the TCP checksum (bytes 50..51); a UDP template is as long (a 64-byte frame is 60 bytes). */
    if (!config || !sent || (void *)(data + 54) > end || config->queues == 0)
        return XDP_ABORTED;
    __u64 k = *sent;
    *sent = k + 1;
    __u64 queue = bpf_get_smp_processor_id() % config->queues;
    __u64 flow;
    int syn;
    if (config->flows_per_queue) {
        flow = (k % config->flows_per_queue) * config->queues + queue;
        syn = k < config->flows_per_queue;
    } else {
        flow = k * config->queues + queue;
        syn = 1;
    }
    __u32 source = 0x0A000000 | (__u32)((flow >> 14) & 0xFFFFFF);
    __u16 port = 1024 + (flow & 0x3FFF);
    __u32 address_sum = (source >> 16) + (source & 0xFFFF);
    *(__u32 *)(data + 26) = bpf_htonl(source);
    *(__u16 *)(data + 34) = bpf_htons(port);
    *(__u16 *)(data + 24) = bpf_htons(finish(config->ip_base_sum + address_sum));
    __u32 l4 = config->l4_base_sum + address_sum + port;
    if (config->tcp) {
        __u8 flags = syn ? 0x02 : 0x10;
        data[47] = flags;
        *(__u16 *)(data + 50) = bpf_htons(finish(l4 + flags));
    } else {
        __u16 checksum = finish(l4);
        *(__u16 *)(data + 40) = bpf_htons(checksum ? checksum : 0xFFFF);
    }
    return XDP_TX;
}
