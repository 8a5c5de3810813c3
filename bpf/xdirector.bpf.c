/* xdirector.bpf.c: decides which frames are the director's. Frames for a virtual service go to the AF_XDP
 * socket of the queue they arrived on; everything else, and anything the program cannot vouch for, goes to
 * the kernel (XDP_PASS), so the host stays reachable. The program schedules nothing. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdirector_shared.h"
#include "parsing.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_SERVICES);
    __type(key, struct xd_service_key);
    __type(value, struct xd_service_value);
} services SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, XD_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, XD_XDP_COUNTER_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} xdp_counters SEC(".maps");

static __always_inline int count(enum xd_xdp_counter counter, int verdict)
{
    __u32 key = counter;
    __u64 *value = bpf_map_lookup_elem(&xdp_counters, &key);
    if (value)
        *value += 1;
    return verdict;
}

/* Fills the key's address and port from an IPv4 header; returns a counter to pass with, or -1 if ours to look up. */
static __always_inline int ipv4_key(struct cursor *c, struct xd_service_key *key)
{
    struct iphdr *ip = cursor_take(c, sizeof(*ip));
    if (!ip || ip->version != 4 || ip->ihl < 5)
        return XD_XDP_PASS_MALFORMED;
    if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK))
        return XD_XDP_PASS_FRAGMENT;
    if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
        return XD_XDP_PASS_OTHER_L4;
    /* Skip IPv4 options: the verifier needs a bounded, constant-sized step. */
    __u32 options = (ip->ihl - 5) * 4;
    if (options && !cursor_skip(c, options))
        return XD_XDP_PASS_MALFORMED;
    __builtin_memcpy(key->addr, &ip->daddr, 4);
    key->proto = ip->protocol;
    key->family = XD_FAMILY_IPV4;
    return -1;
}

static __always_inline int ipv6_key(struct cursor *c, struct xd_service_key *key)
{
    struct ipv6hdr *ip6 = cursor_take(c, sizeof(*ip6));
    if (!ip6 || ip6->version != 6)
        return XD_XDP_PASS_MALFORMED;
    /* Extension headers are not walked: the workers would not either. */
    if (ip6->nexthdr == IPPROTO_FRAGMENT)
        return XD_XDP_PASS_FRAGMENT;
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
        return XD_XDP_PASS_OTHER_L4;
    __builtin_memcpy(key->addr, &ip6->daddr, 16);
    key->proto = ip6->nexthdr;
    key->family = XD_FAMILY_IPV6;
    return -1;
}

SEC("xdp")
int xdirector_xdp(struct xdp_md *ctx)
{
    struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
    struct xd_service_key key = {};
    int pass;

    count(XD_XDP_RX, 0);
    __u16 proto = parse_ethernet(&c);
    if (proto == bpf_htons(ETH_P_IP))
        pass = ipv4_key(&c, &key);
    else if (proto == bpf_htons(ETH_P_IPV6))
        pass = ipv6_key(&c, &key);
    else
        return count(proto ? XD_XDP_PASS_NOT_IP : XD_XDP_PASS_MALFORMED, XDP_PASS);
    if (pass >= 0)
        return count(pass, XDP_PASS);

    /* TCP and UDP both start with source and destination ports. */
    __u16 *ports = cursor_take(&c, 4);
    if (!ports)
        return count(XD_XDP_PASS_MALFORMED, XDP_PASS);
    key.port = ports[1];

    if (!bpf_map_lookup_elem(&services, &key))
        return count(XD_XDP_PASS_NOT_SERVICE, XDP_PASS);

    /* A queue without a socket falls back to the kernel rather than black-holing the frame. */
    int verdict = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
    return count(verdict == XDP_REDIRECT ? XD_XDP_REDIRECTED : XD_XDP_PASS_NO_SOCKET, verdict);
}
