/* parsing.h: bounds-checked cursor parsing for the XDP program (BPF only). */
#ifndef XDIRECTOR_PARSING_H
#define XDIRECTOR_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IP_MF 0x2000
#define IP_OFFSET_MASK 0x1FFF
#define ETH_P_8021Q_ 0x8100

/* A read position within [pos, end), the frame's bounds as the verifier knows them. */
struct cursor {
    void *pos;
    void *end;
};

/* Returns a pointer to the next `size` bytes and advances, or NULL when the frame is shorter. */
static __always_inline void *cursor_take(struct cursor *c, __u32 size)
{
    void *start = c->pos;
    if (start + size > c->end)
        return NULL;
    c->pos = start + size;
    return start;
}

/* The IPv6 fragment header (RFC 8200 4.5). */
struct ipv6_fragment {
    __u8 nexthdr;
    __u8 reserved;
    __be16 offset_flags;  /* offset in 8-byte units (high 13 bits), 2 reserved bits, M (bit 0) */
    __be32 identification;
};

struct vlan_tag {
    __be16 tci;
    __be16 encapsulated_proto;
};

/* Parses the Ethernet header and at most one 802.1Q tag; returns the inner ethertype (network order),
 * or 0 when the frame is too short. */
static __always_inline __u16 parse_ethernet(struct cursor *c)
{
    struct ethhdr *eth = cursor_take(c, sizeof(*eth));
    if (!eth)
        return 0;
    __u16 proto = eth->h_proto;
    if (proto == bpf_htons(ETH_P_8021Q_)) {
        struct vlan_tag *tag = cursor_take(c, sizeof(*tag));
        if (!tag)
            return 0;
        proto = tag->encapsulated_proto;
    }
    return proto;
}

#endif /* XDIRECTOR_PARSING_H */
