/* lab_decap.bpf.c: the labs' real servers run this XDP program instead of the kernel's IPIP/GUE/GRE
 * tunnel devices (which this kernel may lack): it strips an outer IPv4 or IPv6 header (with the UDP + GUE
 * header for UDP port LAB_GUE_PORT, or the GRE header) and hands the inner packet to the kernel, whose VIP
 * on lo then accepts it, as a tunnel device would deliver it. A packet that reaches the lab's VIPs without
 * a tunnel is dropped, so a real server set up for tunnelling cannot be served by direct routing by mistake.
 * Everything else passes untouched. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define LAB_GUE_PORT 6080
/* The labs' VIPs (Topology.vip4 / vip6): 203.0.113.10 and 2001:db8:10::10. */
#define LAB_VIP4 0xCB00710A
static const __u8 lab_vip6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10 };
#define GRE_CSUM 0x8000
#define GRE_KEY 0x2000
#define GRE_SEQ 0x1000

/* Bytes after the outer IP header that belong to the tunnel: 0 for IPIP, 12 for UDP + GUE, 4-16 for GRE;
 * -1 when the packet is not tunnelled. */
static __always_inline int tunnel_overhead(__u8 proto, void *l4, void *end)
{
    if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6)
        return 0;
    if (proto == IPPROTO_UDP) {
        __u16 *udp = l4;
        if ((void *)(udp + 4) > end || udp[1] != bpf_htons(LAB_GUE_PORT))
            return -1;
        return 8 + 4;
    }
    if (proto == IPPROTO_GRE) {
        __u16 *gre = l4;
        if ((void *)(gre + 2) > end)
            return -1;
        __u16 flags = bpf_ntohs(gre[0]);
        return 4 + (flags & GRE_CSUM ? 4 : 0) + (flags & GRE_KEY ? 4 : 0) + (flags & GRE_SEQ ? 4 : 0);
    }
    return -1;
}

SEC("xdp")
int lab_decap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    int outer;
    int overhead;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->ihl != 5)
            return XDP_PASS;
        if (ip->daddr == bpf_htonl(LAB_VIP4))
            return XDP_DROP;
        outer = sizeof(*ip);
        overhead = tunnel_overhead(ip->protocol, ip + 1, end);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return XDP_PASS;
        if (__builtin_memcmp(&ip6->daddr, lab_vip6, 16) == 0)
            return XDP_DROP;
        outer = sizeof(*ip6);
        overhead = tunnel_overhead(ip6->nexthdr, ip6 + 1, end);
    } else {
        return XDP_PASS;
    }
    if (overhead < 0 || overhead > 16)
        return XDP_PASS;
    int strip = outer + overhead;
    __u8 *inner = data + sizeof(*eth) + strip;
    if ((void *)(inner + 1) > end)
        return XDP_PASS;
    __u16 inner_proto;
    if ((*inner >> 4) == 4)
        inner_proto = bpf_htons(ETH_P_IP);
    else if ((*inner >> 4) == 6)
        inner_proto = bpf_htons(ETH_P_IPV6);
    else
        return XDP_PASS;

    struct ethhdr saved;
    __builtin_memcpy(&saved, eth, sizeof(saved));
    if (bpf_xdp_adjust_head(ctx, strip))
        return XDP_PASS;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_DROP;
    __builtin_memcpy(eth->h_dest, saved.h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_source, saved.h_source, ETH_ALEN);
    eth->h_proto = inner_proto;
    return XDP_PASS;
}
