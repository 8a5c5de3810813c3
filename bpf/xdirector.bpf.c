/* xdirector.bpf.c: decides which frames are the director's. Frames for a virtual service, replies from NAT
 * real servers, replies to FULLNAT local addresses, IP fragments of those (by address: see fragment())
 * and ICMP errors about any of those go to the AF_XDP
 * socket of the queue they arrived on; everything else, and anything the program cannot vouch for, goes to
 * the kernel (XDP_PASS), so the host stays reachable. The program schedules and rewrites nothing. */
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
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_NAT_REALS);
    __type(key, struct xd_service_key);
    __type(value, __u32);
} nat_reals SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_LOCAL_ADDRS);
    __type(key, struct xd_local_addr_key);
    __type(value, __u32);
} local_addrs SEC(".maps");

/* The director host's own addresses on the interface (its kernel's): a packet from a NAT real server to one
 * of them is the host's own traffic (a health check's answer), not a reply to translate. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_HOST_ADDRS);
    __type(key, struct xd_local_addr_key);
    __type(value, __u32);
} host_addrs SEC(".maps");

/* Addresses whose fragments are ours, by role (struct xd_fragment_key): later fragments carry no ports. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_FRAGMENT_ADDRS);
    __type(key, struct xd_fragment_key);
    __type(value, __u32);
} fragment_addrs SEC(".maps");

/* Written by the control thread, never read here: the live real servers for `bpftool map dump`. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, XD_MAX_REALS);
    __type(key, struct xd_real_key);
    __type(value, struct xd_real_value);
} real_servers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, XD_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

/* Who runs the program, and its restart grace (struct xd_director). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct xd_director);
} director SEC(".maps");

/* Each queue's worker's last sign of life, written by the workers through a shared mapping. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, XD_MAX_QUEUES);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, struct xd_heartbeat);
} heartbeats SEC(".maps");

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

/* The addresses and protocol of one IP header (the packet's, or the one quoted in an ICMP error). */
struct l3 {
    struct xd_service_key src;  /* address + family; port and proto filled later */
    struct xd_service_key dst;
    __u8 proto;
    __u8 fragment;              /* IPv4 MF or offset, or an IPv6 fragment header: no ports to be had */
    __u16 header_length;        /* of the IP header, options included */
    __u32 packet_length;        /* IPv4 total length, or 40 + IPv6 payload length */
};

#define ICMP_DEST_UNREACH_ 3
#define ICMP_TIME_EXCEEDED_ 11
#define ICMP_PARAMETERPROB_ 12
#define ICMPV6_ERROR_MAX_ 4   /* ICMPv6 errors are types 1..4 (unreachable, too big, time, parameter) */

/* Parses an IPv4 header; returns a counter to pass with, or -1 when `l3` is filled. */
static __always_inline int parse_ipv4(struct cursor *c, struct l3 *l3)
{
    struct iphdr *ip = cursor_take(c, sizeof(*ip));
    if (!ip || ip->version != 4 || ip->ihl < 5)
        return XD_XDP_PASS_MALFORMED;
    l3->fragment = (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET_MASK)) != 0;
    /* Skip IPv4 options. The header length is masked so the verifier sees it bounded (at most 60 bytes)
     * on every path, also where this function is inlined a second time for a quoted header. */
    __u32 header = (ip->ihl * 4) & 0x3c;
    void *next = (void *)ip + header;
    if (header < sizeof(*ip) || next > c->end)
        return XD_XDP_PASS_MALFORMED;
    c->pos = next;
    __builtin_memcpy(l3->src.addr, &ip->saddr, 4);
    __builtin_memcpy(l3->dst.addr, &ip->daddr, 4);
    l3->src.family = l3->dst.family = XD_FAMILY_IPV4;
    l3->proto = ip->protocol;
    l3->header_length = header;
    l3->packet_length = bpf_ntohs(ip->tot_len);
    return -1;
}

static __always_inline int parse_ipv6(struct cursor *c, struct l3 *l3)
{
    struct ipv6hdr *ip6 = cursor_take(c, sizeof(*ip6));
    if (!ip6 || ip6->version != 6)
        return XD_XDP_PASS_MALFORMED;
    __builtin_memcpy(l3->src.addr, &ip6->saddr, 16);
    __builtin_memcpy(l3->dst.addr, &ip6->daddr, 16);
    l3->src.family = l3->dst.family = XD_FAMILY_IPV6;
    l3->proto = ip6->nexthdr;
    l3->header_length = sizeof(*ip6);
    l3->packet_length = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
    /* The one extension header walked, as the workers do: a fragment header right after the fixed one. */
    if (ip6->nexthdr == IPPROTO_FRAGMENT) {
        struct ipv6_fragment *fragment = cursor_take(c, sizeof(*fragment));
        if (!fragment)
            return XD_XDP_PASS_MALFORMED;
        l3->proto = fragment->nexthdr;
        l3->fragment = 1;
    }
    return -1;
}

static __always_inline int is_in(void *map, struct xd_service_key *address)
{
    struct xd_local_addr_key key = { .family = address->family };
    __builtin_memcpy(key.addr, address->addr, 16);
    return bpf_map_lookup_elem(map, &key) != NULL;
}

static __always_inline int is_local_address(struct xd_service_key *address) { return is_in(&local_addrs, address); }

/* The host's own traffic (a health check's answer from a NAT real server) stays the kernel's. */
static __always_inline int is_to_host(struct xd_service_key *destination) { return is_in(&host_addrs, destination); }

/* A NAT real server's packet is a reply to translate unless it is addressed to the host itself. */
static __always_inline int is_nat_reply(struct xd_service_key *source, struct xd_service_key *destination)
{
    return bpf_map_lookup_elem(&nat_reals, source) && !is_to_host(destination);
}

/* Fills the ports and protocol of both keys from a TCP or UDP header; 0 when the header is cut short. */
static __always_inline int take_ports(struct cursor *c, struct l3 *l3)
{
    __u16 *ports = cursor_take(c, 4);
    if (!ports)
        return 0;
    l3->src.port = ports[0];
    l3->dst.port = ports[1];
    l3->src.proto = l3->dst.proto = l3->proto;
    return 1;
}

/* The queue has no socket: its worker is gone or was never there. A worker that died (kill -9, crash) is
 * about to be replaced by a director that resumes its connections, so for the grace period after its last
 * heartbeat its frames are dropped (TCP retransmits) rather than handed to a kernel that would reset them;
 * then they fall back to the kernel. Replies of translated connections are never handed to the kernel,
 * which would forward them untranslated. A queue never served passes at once. */
static __always_inline int no_worker(struct xdp_md *ctx, int reply)
{
    __u32 queue = ctx->rx_queue_index, zero = 0;
    struct xd_heartbeat *beat = bpf_map_lookup_elem(&heartbeats, &queue);
    struct xd_director *owner = bpf_map_lookup_elem(&director, &zero);
    if (beat && owner && beat->ns && bpf_ktime_get_ns() - beat->ns < owner->grace_ns)
        return count(XD_XDP_HELD_NO_WORKER, XDP_DROP);
    if (reply)
        return count(XD_XDP_DROP_REPLY_NO_WORKER, XDP_DROP);
    return count(XD_XDP_PASS_NO_SOCKET, XDP_PASS);
}

/* Puts `meta` (NULL: sixteen zero bytes, no description) in front of a frame about to go to a worker. Every
 * redirected frame gets fresh metadata, so a UMEM frame never keeps an earlier frame's description: the
 * kernel copies the metadata with the frame, also into a frame it then drops (RX ring full) and hands out
 * again. Without metadata support (the adjustment refused) the workers parse every frame. */
static __always_inline void put_metadata(struct xdp_md *ctx, const struct xd_frame_meta *meta)
{
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct xd_frame_meta)))
        return;
    struct xd_frame_meta *area = (void *)(long)ctx->data_meta;
    if ((void *)(area + 1) > (void *)(long)ctx->data)
        return;
    if (meta)
        __builtin_memcpy(area, meta, sizeof(*area));
    else
        __builtin_memset(area, 0, sizeof(*area));
}

/* `reply`: a frame to translate back, never handed to the kernel (see no_worker). `meta`: its description
 * (NULL: none), written first: a frame that goes to the kernel instead (no worker) carries it as skb
 * metadata, which nothing there reads. */
static __always_inline int redirect(struct xdp_md *ctx, enum xd_xdp_counter kind, int reply,
                                    const struct xd_frame_meta *meta)
{
    put_metadata(ctx, meta);
    int verdict = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
    if (verdict != XDP_REDIRECT)
        return no_worker(ctx, reply);
    if (kind != XD_XDP_REDIRECTED)
        count(kind, 0);
    return count(XD_XDP_REDIRECTED, verdict);
}

static __always_inline int has_fragment_role(struct xd_service_key *address, __u8 proto, __u8 role)
{
    struct xd_fragment_key key = { .proto = proto, .family = address->family, .role = role };
    __builtin_memcpy(key.addr, address->addr, 16);
    return bpf_map_lookup_elem(&fragment_addrs, &key) != NULL;
}

/* An IP fragment (IPv6: also an atomic one). Later fragments carry no ports, so fragments are steered by
 * address alone: to a VIP of a service of their protocol, from a NAT real server's address (not to the host),
 * or to a FULLNAT local address. Any port of such an address is the director's then: the worker schedules a
 * datagram's first fragment by its ports, and its later fragments follow it. */
static __always_inline int fragment(struct xdp_md *ctx, struct l3 *l3)
{
    if (l3->proto != IPPROTO_TCP && l3->proto != IPPROTO_UDP)
        return count(XD_XDP_PASS_FRAGMENT, XDP_PASS);
    if (has_fragment_role(&l3->dst, l3->proto, XD_FRAGMENT_TO_SERVICE))
        return redirect(ctx, XD_XDP_REDIRECTED_FRAGMENT, 0, NULL);
    if (is_local_address(&l3->dst)
        || (has_fragment_role(&l3->src, l3->proto, XD_FRAGMENT_FROM_NAT_REAL) && !is_to_host(&l3->dst)))
        return redirect(ctx, XD_XDP_REDIRECTED_FRAGMENT, 1, NULL);
    return count(XD_XDP_PASS_FRAGMENT, XDP_PASS);
}

/* An ICMP error is ours when the packet it quotes is: a reply from a virtual service (quoted source is a
 * VIP:port), a packet we sent to a NAT real server (quoted destination), or one we sent from a local
 * address (the error comes back to it). */
static __always_inline int icmp_error(struct xdp_md *ctx, struct cursor *c, struct l3 *outer)
{
    __u8 *icmp = cursor_take(c, 8);
    if (!icmp)
        return count(XD_XDP_PASS_MALFORMED, XDP_PASS);
    __u8 type = icmp[0];
    struct l3 inner = {};
    int pass;
    if (outer->src.family == XD_FAMILY_IPV4) {
        if (type != ICMP_DEST_UNREACH_ && type != ICMP_TIME_EXCEEDED_ && type != ICMP_PARAMETERPROB_)
            return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
        pass = parse_ipv4(c, &inner);
    } else {
        if (type == 0 || type > ICMPV6_ERROR_MAX_)
            return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
        pass = parse_ipv6(c, &inner);
    }
    /* A quoted fragment: only a first one has ports, and the kernel answers those well enough. */
    if (pass >= 0 || inner.fragment)
        return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
    if ((inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) || !take_ports(c, &inner))
        return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
    if (bpf_map_lookup_elem(&services, &inner.src) || is_local_address(&outer->dst)
        || is_nat_reply(&inner.dst, &outer->dst))
        return redirect(ctx, XD_XDP_REDIRECTED_ICMP, 0, NULL);
    return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
}

/* The TCP or UDP packet whose ports `c` just took is whole and consistent in every way the workers' parser
 * checks: the IP lengths fit the frame, the TCP data offset or the UDP length fits the segment. Only then
 * is it described to the worker, which then skips its own parse. */
static __always_inline int is_whole_segment(struct cursor *c, struct l3 *l3, __u32 frame_room)
{
    if (l3->packet_length < l3->header_length || l3->packet_length > frame_room)
        return 0;
    __u32 segment = l3->packet_length - l3->header_length;
    if (l3->proto == IPPROTO_TCP) {
        __u8 *rest = cursor_take(c, 16);  /* the 20-byte header, ports already taken */
        if (!rest || segment < 20)
            return 0;
        __u32 data_offset = (rest[8] >> 4) * 4;
        return data_offset >= 20 && data_offset <= segment;
    }
    __u16 *rest = cursor_take(c, 4);      /* UDP length and checksum */
    if (!rest || segment < 8)
        return 0;
    __u32 length = bpf_ntohs(rest[0]);
    return length >= 8 && length <= segment;
}

/* The description of a whole segment (see struct xd_frame_meta), sealed for its frame. */
static __always_inline void describe(struct xd_frame_meta *meta, __u32 service, struct l3 *l3, __u32 frame_length,
                                     __u32 l3_offset, __u32 l4_offset)
{
    meta->service = service;
    meta->packet_length = l3->packet_length;
    meta->l3 = l3_offset;
    meta->l4 = l4_offset;
    meta->proto = l3->proto;
    meta->family = l3->src.family;
    meta->pad = 0;
    meta->seal = xd_frame_meta_seal(service, l3->packet_length | l3_offset << 16 | l4_offset << 24,
                                    l3->proto | (__u32)l3->src.family << 8, frame_length);
}

SEC("xdp")
int xdirector_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    struct cursor c = { .pos = data, .end = (void *)(long)ctx->data_end };
    struct l3 l3 = {};
    int pass;

    count(XD_XDP_RX, 0);
    __u16 proto = parse_ethernet(&c);
    __u32 l3_offset = c.pos - data;
    if (proto == bpf_htons(ETH_P_IP))
        pass = parse_ipv4(&c, &l3);
    else if (proto == bpf_htons(ETH_P_IPV6))
        pass = parse_ipv6(&c, &l3);
    else
        return count(proto ? XD_XDP_PASS_NOT_IP : XD_XDP_PASS_MALFORMED, XDP_PASS);
    if (pass >= 0)
        return count(pass, XDP_PASS);
    if (l3.fragment)
        return fragment(ctx, &l3);

    if (l3.proto == IPPROTO_ICMP && l3.src.family == XD_FAMILY_IPV4)
        return icmp_error(ctx, &c, &l3);
    if (l3.proto == IPPROTO_ICMPV6 && l3.src.family == XD_FAMILY_IPV6)
        return icmp_error(ctx, &c, &l3);
    if (l3.proto != IPPROTO_TCP && l3.proto != IPPROTO_UDP)
        return count(XD_XDP_PASS_OTHER_L4, XDP_PASS);
    /* TCP and UDP both start with source and destination ports. */
    __u32 l4_offset = c.pos - data;
    if (!take_ports(&c, &l3))
        return count(XD_XDP_PASS_MALFORMED, XDP_PASS);
    __u32 frame_length = c.end - data;
    int whole = is_whole_segment(&c, &l3, frame_length - l3_offset);
    struct xd_frame_meta meta = {};

    struct xd_service_value *service = bpf_map_lookup_elem(&services, &l3.dst);
    if (service) {
        if (whole)
            describe(&meta, service->index, &l3, frame_length, l3_offset, l4_offset);
        return redirect(ctx, XD_XDP_REDIRECTED, 0, whole ? &meta : NULL);
    }
    if (is_local_address(&l3.dst) || is_nat_reply(&l3.src, &l3.dst)) {
        if (whole)
            describe(&meta, XD_META_NO_SERVICE, &l3, frame_length, l3_offset, l4_offset);
        return redirect(ctx, XD_XDP_REDIRECTED_REPLY, 1, whole ? &meta : NULL);
    }
    return count(XD_XDP_PASS_NOT_SERVICE, XDP_PASS);
}
