/* xdirector_shared.h: every struct and constant shared by the XDP program (bpf/) and the Swift data plane.
 * Both sides include this file; nothing here may be redefined elsewhere. */
#ifndef XDIRECTOR_SHARED_H
#define XDIRECTOR_SHARED_H

#include <linux/types.h>

/* Capacity of the `services` map (virtual services). */
#ifndef XD_MAX_SERVICES
#define XD_MAX_SERVICES 4096
#endif

/* Capacity of the `nat_reals` map (real servers reached by NAT, whose replies come back through us). */
#ifndef XD_MAX_NAT_REALS
#define XD_MAX_NAT_REALS 65536
#endif

/* Capacity of the `local_addrs` map (FULLNAT local addresses). */
#ifndef XD_MAX_LOCAL_ADDRS
#define XD_MAX_LOCAL_ADDRS 1024
#endif

/* Capacity of the `host_addrs` map (the addresses of the director's own interface). */
#ifndef XD_MAX_HOST_ADDRS
#define XD_MAX_HOST_ADDRS 256
#endif

/* Capacity of the `fragment_addrs` map (per protocol: each VIP, each NAT real server's address). */
#ifndef XD_MAX_FRAGMENT_ADDRS
#define XD_MAX_FRAGMENT_ADDRS (XD_MAX_SERVICES + XD_MAX_NAT_REALS)
#endif

/* Capacity of the `real_servers` map (every real server of every service, draining ones included). */
#ifndef XD_MAX_REALS
#define XD_MAX_REALS 65536
#endif

/* Capacity of the `xsks` map: the highest queue index the director can serve, plus one. */
#ifndef XD_MAX_QUEUES
#define XD_MAX_QUEUES 256
#endif

/* Address family tags stored in keys (independent of libc's AF_* values). */
#define XD_FAMILY_IPV4 4
#define XD_FAMILY_IPV6 6

/* Key of the `services` map: a virtual service, VIP:port/proto. 20 bytes, no implicit padding. */
struct xd_service_key {
    __u8 addr[16];  /* network order; IPv4 in addr[0..3], addr[4..15] zero */
    __u16 port;     /* network order */
    __u8 proto;     /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
    __u8 family;    /* XD_FAMILY_IPV4 or XD_FAMILY_IPV6 */
};

/* Value of the `services` map. 8 bytes. */
struct xd_service_value {
    __u32 index;  /* host order: the service's position in the workers' configuration snapshot */
    __u32 flags;  /* host order: XD_SVC_F_* */
};

/* Key of the `local_addrs` map: a FULLNAT local address (the source of translated packets, so the
 * destination of the real servers' replies). 20 bytes, no implicit padding. */
struct xd_local_addr_key {
    __u8 addr[16];  /* network order; IPv4 in addr[0..3], addr[4..15] zero */
    __u8 family;    /* XD_FAMILY_IPV4 or XD_FAMILY_IPV6 */
    __u8 pad[3];    /* zero */
};

/* Key of the `fragment_addrs` map: an address whose IP fragments are the director's. A later fragment carries
 * no ports, so neither `services` nor `nat_reals` can find it: this map holds, per protocol, every VIP of a
 * service (fragments to it) and every NAT real server's address (its replies' fragments). Its value is a
 * __u32, unused (0). 20 bytes, no implicit padding. */
struct xd_fragment_key {
    __u8 addr[16];  /* network order; IPv4 in addr[0..3], addr[4..15] zero */
    __u8 proto;     /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
    __u8 family;    /* XD_FAMILY_IPV4 or XD_FAMILY_IPV6 */
    __u8 role;      /* XD_FRAGMENT_TO_SERVICE or XD_FRAGMENT_FROM_NAT_REAL */
    __u8 pad;       /* zero */
};

/* Roles of a `fragment_addrs` entry (xd_fragment_key.role). */
#define XD_FRAGMENT_TO_SERVICE 1    /* a VIP: fragments whose destination it is */
#define XD_FRAGMENT_FROM_NAT_REAL 2 /* a NAT real server: fragments whose source it is (not to a host address) */

/* The `nat_reals` map is keyed by `struct xd_service_key` holding a NAT real server's RIP:RPORT/proto (its
 * replies carry that as their source); its value is a __u32, unused (0). The `local_addrs` value too. */

/* Service flags (xd_service_value.flags). */
#define XD_SVC_F_NONE 0

/* Key of the `real_servers` map: a real server of a virtual service. 40 bytes, no implicit padding. */
struct xd_real_key {
    struct xd_service_key service;  /* the virtual service, as the `services` map keys it */
    __u8 addr[16];  /* network order; IPv4 in addr[0..3] */
    __u16 port;     /* network order */
    __u8 family;    /* XD_FAMILY_IPV4 or XD_FAMILY_IPV6 (a tunnelled real server may differ from its service) */
    __u8 pad;       /* zero */
};

/* Value of the `real_servers` map: the real server as the workers' snapshot has it. The XDP program does not
 * read it (the workers schedule); it is the live configuration for operators (`bpftool map dump`). 16 bytes. */
struct xd_real_value {
    __u32 weight;           /* host order */
    __u8 method;            /* XD_METHOD_* */
    __u8 tunnel;            /* XD_TUNNEL_* for XD_METHOD_TUNNEL, else 0 */
    __u16 flags;            /* host order: XD_REAL_F_* */
    __u32 upper_threshold;  /* host order: -x, 0 = none */
    __u32 lower_threshold;  /* host order: -y, 0 = none */
};

/* Forwarding methods (xd_real_value.method), as ipvsadm's -g, -i, -m and --fullnat. */
#define XD_METHOD_DR 0
#define XD_METHOD_TUNNEL 1
#define XD_METHOD_MASQ 2
#define XD_METHOD_FULLNAT 3

/* Tunnel types (xd_real_value.tunnel). */
#define XD_TUNNEL_IPIP 0
#define XD_TUNNEL_GUE 1
#define XD_TUNNEL_GRE 2

/* Real server flags (xd_real_value.flags). */
#define XD_REAL_F_NONE 0
#define XD_REAL_F_DRAINING 1  /* removed from the configuration; its connections still reach it until they end */

/* Value of the one-entry `director` array: who runs the program and how it behaves while no worker serves a
 * queue. Written by the director before it attaches; read by the program and by the next director, which
 * takes over an attached program only when its owner is gone. 24 bytes. */
struct xd_director {
    __u32 pid;              /* host order: the director's process id */
    __u32 flags;            /* host order: zero */
    __u64 start_time;       /* host order: the process's start time in clock ticks after boot (/proc/PID/stat 22) */
    __u64 grace_ns;         /* host order: --restart-grace, how long after a queue's last heartbeat its frames are held */
};

/* Value of the `heartbeats` array (one per queue, mmapped by the director): the last time the queue's worker
 * ran its loop, CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns's clock); 0 = never served. A cache line each,
 * so workers never share one. 64 bytes. */
struct xd_heartbeat {
    __u64 ns;               /* host order */
    __u64 pad[7];           /* zero */
};

/* What the program tells a worker about a frame it redirects, in the XDP metadata area directly before the
 * frame (bpf_xdp_adjust_meta; AF_XDP delivers it in front of the descriptor's address, copy mode included):
 * the frame is a whole TCP or UDP packet (no fragment, no ICMP) that passed every check the workers' parser
 * makes, its headers are where `l3` and `l4` say, and it is for service `service` (the `services` map's
 * index) or, XD_META_NO_SERVICE, a reply to translate. The worker then neither parses the frame again nor
 * looks the service up. Every redirected frame gets metadata, sixteen zero bytes when it is not described,
 * so no frame carries an earlier frame's description (the kernel copies it with the frame, also into a frame
 * it drops and hands out again). `seal` ties the rest to the frame: a worker accepts the metadata only when
 * it equals xd_frame_meta_seal() of the fields and the frame's length, and clears it once read. 16 bytes (a
 * multiple of 4, as the kernel requires). */
struct xd_frame_meta {
    __u32 service;          /* host order: xd_service_value.index, or XD_META_NO_SERVICE */
    __u16 packet_length;    /* host order: IPv4 total length, or 40 + IPv6 payload length */
    __u8 l3;                /* offset of the IP header: 14, or 18 behind one VLAN tag */
    __u8 l4;                /* offset of the TCP or UDP header */
    __u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP */
    __u8 family;            /* XD_FAMILY_IPV4 or XD_FAMILY_IPV6 */
    __u16 pad;              /* zero */
    __u32 seal;             /* host order: xd_frame_meta_seal(...) */
};

#define XD_META_NO_SERVICE 0xFFFFFFFFu
#define XD_META_MAGIC 0x5844A7E1u

/* The seal of metadata whose first three 32-bit words (as they lie in memory, little endian) are `service`,
 * `lengths` (packet_length | l3 << 16 | l4 << 24) and `kind` (proto | family << 8), for a frame of
 * `frame_length` bytes: every field and the length mixed into one word, so stray bytes pass for metadata only
 * by a 1-in-2^32 chance. */
static inline __u32 xd_frame_meta_seal(__u32 service, __u32 lengths, __u32 kind, __u32 frame_length)
{
    return (XD_META_MAGIC ^ service ^ lengths * 0x9E3779B1u ^ kind * 0x85EBCA77u ^ frame_length << 16) + frame_length;
}

/* The XDP program's per-CPU counters (`xdp_counters` map, one __u64 each), defined once: X(NAME, "name")
 * gives the enum `XD_XDP_<NAME>` (the map's index) and the name operators and Prometheus see
 * (`xd_xdp_counter_name`). Append only: the index is the map's layout. */
#define XD_XDP_COUNTERS(X) \
    X(RX, "rx")                                     /* every frame the program saw */ \
    X(REDIRECTED, "redirected")                     /* handed to the queue's AF_XDP socket */ \
    X(PASS_NOT_IP, "pass_not_ip")                   /* ARP, LLDP, other ethertypes: to the kernel */ \
    X(PASS_NOT_SERVICE, "pass_not_service")         /* IP, but no virtual service matches: to the kernel */ \
    X(PASS_OTHER_L4, "pass_other_l4")               /* ICMP and protocols other than TCP/UDP: to the kernel */ \
    X(PASS_FRAGMENT, "pass_fragment")               /* IP fragments of no service's or NAT real server's address: to the kernel */ \
    X(PASS_NO_SOCKET, "pass_no_socket")             /* a service matched but the queue has no socket: to the kernel */ \
    X(PASS_MALFORMED, "pass_malformed")             /* truncated or inconsistent headers: to the kernel, which drops them */ \
    X(REDIRECTED_REPLY, "redirected_reply")         /* of the redirected: a NAT real server's reply or a reply to a local address */ \
    X(REDIRECTED_ICMP, "redirected_icmp")           /* of the redirected: an ICMP error about one of our flows */ \
    X(HELD_NO_WORKER, "held_no_worker")             /* ours, but the queue's worker is gone (restart): dropped within the grace period */ \
    X(DROP_REPLY_NO_WORKER, "drop_reply_no_worker") /* a NAT/FULLNAT reply while the queue has no worker: dropped, never sent untranslated */ \
    X(REDIRECTED_FRAGMENT, "redirected_fragment")   /* of the redirected: an IP fragment to a VIP, from a NAT real server or to a local address */

/* Indices of the XDP program's counters. */
enum xd_xdp_counter {
#define XD_XDP_COUNTER_ENUM(name, text) XD_XDP_##name,
    XD_XDP_COUNTERS(XD_XDP_COUNTER_ENUM)
#undef XD_XDP_COUNTER_ENUM
    XD_XDP_COUNTER_COUNT        /* number of counters; sizes the map */
};

#ifndef __bpf__
/* The name of counter `counter` ("rx", "pass_not_service", ...); NULL past the last. User space only
 * (shared.c), generated from XD_XDP_COUNTERS. */
const char *xd_xdp_counter_name(unsigned int counter);
#endif

/* Names under which the maps are pinned, in /sys/fs/bpf/xdirector/<ifname>/. */
#define XD_MAP_SERVICES "services"
#define XD_MAP_XSKS "xsks"
#define XD_MAP_XDP_COUNTERS "xdp_counters"
#define XD_MAP_NAT_REALS "nat_reals"
#define XD_MAP_LOCAL_ADDRS "local_addrs"
#define XD_MAP_REAL_SERVERS "real_servers"
#define XD_MAP_DIRECTOR "director"
#define XD_MAP_HOST_ADDRS "host_addrs"
#define XD_MAP_HEARTBEATS "heartbeats"
#define XD_MAP_FRAGMENT_ADDRS "fragment_addrs"
#define XD_PROG_NAME "xdirector_xdp"

#endif /* XDIRECTOR_SHARED_H */
