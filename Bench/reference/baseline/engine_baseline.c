/* engine_baseline.c: the director's per-packet work for direct routing, written as a careful C engineer
 * would write it, so `xdirector-bench engine` can say how close the Swift engine is. Per frame: parse
 * Ethernet (one VLAN tag) / IPv4 or IPv6 / TCP or UDP, one flow hash, the service in an open-addressed
 * table, the connection in an open-addressed table of 64-byte entries (linear probing, at most 32 slots,
 * the director's capacity rule), a new connection for a SYN or datagram (round robin; the IPv4 header
 * checksum verified there, where state is created), expiry refreshed by a small TCP state rule, then the DR
 * rewrite: MACs, TTL - 1 with the incremental checksum (kernel ip_decrease_ttl). Around it the AF_XDP batch
 * loop of Bench/reference/xsk_fwd.c. Single-threaded: one baseline per worker. */
#include <stdlib.h>
#include <string.h>
#include <xdp/xsk.h>
#include "engine_baseline.h"

#define BATCH 64u
#define PROBE_LIMIT 32u
#define SERVICE_SLOTS 16u
#define MAX_SERVICES 8u
#define MAX_SERVERS 64u

struct flow_key {
    uint64_t src_hi, src_lo, dst_hi, dst_lo;  /* host order halves, IPv4 in the low 32 bits of *_lo */
    uint16_t sport, dport;                    /* host order */
    uint8_t proto, family;
};

struct connection {
    struct flow_key key;
    uint32_t hash;
    uint32_t expires;
    uint32_t server;
    uint8_t state;
    uint8_t used;
} __attribute__((aligned(64)));

struct service {
    uint64_t hi, lo;
    uint16_t port;
    uint8_t proto, family;
    uint32_t first, count, cursor;
};

enum { ST_SYN = 0, ST_ESTABLISHED = 1, ST_FIN = 2, ST_CLOSE = 3, ST_UDP = 4 };
static const uint32_t timeouts[] = { 60, 900, 120, 10, 300 };

struct xdb_baseline {
    struct connection *connections;
    uint64_t mask;
    uint64_t interface_mac;
    int32_t service_slots[SERVICE_SLOTS];
    struct service services[MAX_SERVICES];
    uint32_t service_count;
    uint64_t server_macs[MAX_SERVERS];
    uint32_t server_count;
    uint64_t recycled[BATCH];
    uint64_t transmitted, dropped, opened, rx_bytes, tx_bytes;
};

static inline uint16_t load16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }

/* The director's flow hash (FlowKey.flowHash), so both tables spread alike. */
static inline uint32_t flow_hash(const struct flow_key *k)
{
    uint64_t h = k->src_hi * 0x9E3779B97F4A7C15ull;
    h ^= k->src_lo + 0xC2B2AE3D27D4EB4Full;
    h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull;
    h ^= k->dst_hi * 0x94D049BB133111EBull;
    h ^= k->dst_lo;
    h = (h ^ (h >> 31)) * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t)k->sport | (uint64_t)k->dport << 16 | (uint64_t)k->proto << 32 | (uint64_t)k->family << 40;
    h = (h ^ (h >> 32)) * 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static inline uint32_t service_hash(uint64_t hi, uint64_t lo, uint16_t port, uint8_t proto)
{
    uint64_t h = (hi ^ lo ^ ((uint64_t)port << 32 | proto)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 40);
}

static inline uint64_t mac48(const uint8_t *m)
{
    return (uint64_t)m[0] << 40 | (uint64_t)m[1] << 32 | (uint64_t)m[2] << 24 | (uint64_t)m[3] << 16
        | (uint64_t)m[4] << 8 | m[5];
}

static inline void store_mac(uint8_t *p, uint64_t mac)
{
    for (int i = 0; i < 6; i++) p[i] = (uint8_t)(mac >> (40 - 8 * i));
}

struct xdb_baseline *xdb_baseline_create(uint32_t capacity, const uint8_t interface_mac[6])
{
    struct xdb_baseline *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    uint64_t slots = 64;
    while (slots < 2ull * capacity) slots <<= 1;
    b->connections = aligned_alloc(64, slots * sizeof(struct connection));
    if (!b->connections) { free(b); return NULL; }
    memset(b->connections, 0, slots * sizeof(struct connection));
    b->mask = slots - 1;
    b->interface_mac = mac48(interface_mac);
    for (unsigned i = 0; i < SERVICE_SLOTS; i++) b->service_slots[i] = -1;
    return b;
}

void xdb_baseline_destroy(struct xdb_baseline *b)
{
    if (!b) return;
    free(b->connections);
    free(b);
}

int xdb_baseline_add_service(struct xdb_baseline *b, uint8_t family, const uint8_t address[16], uint16_t port,
                             uint8_t proto, uint32_t servers, const uint8_t *macs)
{
    if (b->service_count == MAX_SERVICES || b->server_count + servers > MAX_SERVERS) return -1;
    struct service *s = &b->services[b->service_count];
    if (family == 4) { s->hi = 0; s->lo = load32(address); }
    else { s->hi = load64(address); s->lo = load64(address + 8); }
    s->port = port; s->proto = proto; s->family = family;
    s->first = b->server_count; s->count = servers; s->cursor = 0;
    for (uint32_t i = 0; i < servers; i++) b->server_macs[b->server_count++] = mac48(macs + 6 * i);
    uint32_t slot = service_hash(s->hi, s->lo, port, proto) & (SERVICE_SLOTS - 1);
    while (b->service_slots[slot] >= 0) slot = (slot + 1) & (SERVICE_SLOTS - 1);
    b->service_slots[slot] = (int32_t)b->service_count;
    return (int)b->service_count++;
}

static inline const struct service *find_service(const struct xdb_baseline *b, const struct flow_key *k)
{
    uint32_t slot = service_hash(k->dst_hi, k->dst_lo, k->dport, k->proto) & (SERVICE_SLOTS - 1);
    for (unsigned n = 0; n < SERVICE_SLOTS; n++) {
        int32_t index = b->service_slots[slot];
        if (index < 0) return NULL;
        const struct service *s = &b->services[index];
        if (s->lo == k->dst_lo && s->hi == k->dst_hi && s->port == k->dport && s->proto == k->proto
            && s->family == k->family)
            return s;
        slot = (slot + 1) & (SERVICE_SLOTS - 1);
    }
    return NULL;
}

static inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
    return ((a->src_lo ^ b->src_lo) | (a->src_hi ^ b->src_hi) | (a->dst_lo ^ b->dst_lo) | (a->dst_hi ^ b->dst_hi)
            | (uint64_t)(a->sport ^ b->sport) | (uint64_t)(a->dport ^ b->dport) << 16
            | (uint64_t)(a->proto ^ b->proto) << 32 | (uint64_t)(a->family ^ b->family) << 40) == 0;
}

static inline int live(uint32_t expires, uint32_t now) { return (int32_t)(expires - now) > 0; }

static inline uint8_t next_state(uint8_t state, uint8_t flags)
{
    if (state == ST_UDP) return ST_UDP;
    if (flags & 0x04) return ST_CLOSE;
    if (flags & 0x01) return ST_FIN;
    if (flags & 0x10) return state == ST_FIN ? ST_FIN : ST_ESTABLISHED;
    return state;
}

static inline uint16_t ipv4_checksum(const uint8_t *ip, unsigned length)
{
    uint32_t sum = 0;
    for (unsigned i = 0; i < length; i += 2) sum += load16(ip + i);
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* 1: rewritten, to transmit; 0: dropped. */
static inline int process(struct xdb_baseline *b, uint8_t *frame, uint32_t length, uint32_t now)
{
    if (length < 14) return 0;
    unsigned l3 = 14;
    uint16_t ethertype = load16(frame + 12);
    if (ethertype == 0x8100) {
        if (length < 18) return 0;
        ethertype = load16(frame + 16);
        l3 = 18;
    }
    uint8_t *ip = frame + l3;
    unsigned available = length - l3, header, packet;
    struct flow_key key;
    uint8_t proto;
    int ipv4 = ethertype == 0x0800;
    if (ipv4) {
        if (available < 20 || ip[0] >> 4 != 4) return 0;
        header = (ip[0] & 0x0F) * 4u;
        packet = load16(ip + 2);
        if (header < 20 || packet < header || available < packet) return 0;
        if (load16(ip + 6) & 0x3FFF) return 0;  /* fragments go to the kernel */
        proto = ip[9];
        key.src_hi = 0; key.src_lo = load32(ip + 12);
        key.dst_hi = 0; key.dst_lo = load32(ip + 16);
        key.family = 4;
    } else if (ethertype == 0x86DD) {
        if (available < 40 || ip[0] >> 4 != 6) return 0;
        header = 40;
        packet = 40u + load16(ip + 4);
        if (available < packet) return 0;
        proto = ip[6];
        key.src_hi = load64(ip + 8); key.src_lo = load64(ip + 16);
        key.dst_hi = load64(ip + 24); key.dst_lo = load64(ip + 32);
        key.family = 6;
    } else {
        return 0;
    }
    const uint8_t *l4 = ip + header;
    unsigned segment = packet - header;
    uint8_t flags = 0;
    if (proto == 6) {
        if (segment < 20 || (l4[12] >> 4) < 5 || (l4[12] >> 4) * 4u > segment) return 0;
        flags = l4[13];
    } else if (proto == 17) {
        unsigned udp = load16(l4 + 4);
        if (segment < 8 || udp < 8 || udp > segment) return 0;
    } else {
        return 0;
    }
    key.sport = load16(l4);
    key.dport = load16(l4 + 2);
    key.proto = proto;

    const struct service *service = find_service(b, &key);
    if (!service) return 0;
    uint32_t hash = flow_hash(&key);
    uint64_t slot = hash & b->mask;
    struct connection *c = NULL, *free_slot = NULL;
    for (unsigned n = 0; n < PROBE_LIMIT; n++) {
        struct connection *e = &b->connections[slot];
        if (!e->used) { if (!free_slot) free_slot = e; break; }
        if (e->hash == hash && same_flow(&e->key, &key) && live(e->expires, now)) { c = e; break; }
        if (!free_slot && !live(e->expires, now)) free_slot = e;
        slot = (slot + 1) & b->mask;
    }
    if (c) {
        c->state = next_state(c->state, flags);
    } else {
        int opens = proto != 6 || (flags & 0x17) == 0x02;
        if (!opens || !free_slot || service->count == 0) return 0;
        /* State is created from this packet: its IPv4 header must be sound. */
        if (ipv4 && ipv4_checksum(ip, header) != 0) return 0;
        struct service *s = (struct service *)service;
        uint32_t server = s->first + s->cursor;
        s->cursor = s->cursor + 1 == s->count ? 0 : s->cursor + 1;
        c = free_slot;
        c->key = key; c->hash = hash; c->server = server; c->used = 1;
        c->state = proto == 6 ? ST_SYN : ST_UDP;
        b->opened++;
    }
    c->expires = now + timeouts[c->state];

    if (ipv4) {
        if (ip[8] <= 1) return 0;
        ip[8]--;
        /* ip_decrease_ttl: the checksum field, in network order, gains 0x0100. */
        uint32_t check = (uint32_t)load16(ip + 10) + 0x0100;
        check += check >> 16;
        ip[10] = (uint8_t)(check >> 8); ip[11] = (uint8_t)check;
    } else {
        if (ip[7] <= 1) return 0;
        ip[7]--;
    }
    store_mac(frame, b->server_macs[c->server]);
    store_mac(frame + 6, b->interface_mac);
    return 1;
}

uint32_t xdb_baseline_batch(struct xdb_baseline *b, void *fill_ring, void *completion_ring, void *rx_ring,
                            void *tx_ring, void *area, uint32_t frame_size, uint32_t now)
{
    struct xsk_ring_prod *fill = fill_ring, *tx = tx_ring;
    struct xsk_ring_cons *completion = completion_ring, *rx = rx_ring;
    uint64_t chunk_mask = frame_size - 1;
    uint32_t index, fill_index;

    uint32_t completed = xsk_ring_cons__peek(completion, 2 * BATCH, &index);
    if (completed && xsk_ring_prod__reserve(fill, completed, &fill_index) == completed) {
        for (uint32_t i = 0; i < completed; i++)
            *xsk_ring_prod__fill_addr(fill, fill_index + i) = *xsk_ring_cons__comp_addr(completion, index + i) & ~chunk_mask;
        xsk_ring_prod__submit(fill, completed);
        xsk_ring_cons__release(completion, completed);
    } else if (completed) {
        xsk_ring_cons__cancel(completion, completed);
    }

    uint32_t rx_index, tx_index = 0;
    uint32_t received = xsk_ring_cons__peek(rx, BATCH, &rx_index);
    if (!received) return 0;
    uint32_t slots = xsk_ring_prod__reserve(tx, received, &tx_index);
    uint32_t sent = 0, dropped = 0;
    uint64_t bytes = 0, sent_bytes = 0;
    for (uint32_t i = 0; i < received; i++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(rx, rx_index + i);
        uint64_t addr = d->addr;
        uint32_t len = d->len;
        bytes += len;
        if (sent < slots && process(b, (uint8_t *)area + addr, len, now)) {
            struct xdp_desc *out = xsk_ring_prod__tx_desc(tx, tx_index + sent++);
            out->addr = addr; out->len = len; out->options = 0;
            sent_bytes += len;
        } else {
            b->recycled[dropped++] = addr;
        }
    }
    xsk_ring_cons__release(rx, received);
    if (sent < slots) tx->cached_prod -= slots - sent;
    if (sent) xsk_ring_prod__submit(tx, sent);
    if (dropped && xsk_ring_prod__reserve(fill, dropped, &fill_index) == dropped) {
        for (uint32_t i = 0; i < dropped; i++) *xsk_ring_prod__fill_addr(fill, fill_index + i) = b->recycled[i];
        xsk_ring_prod__submit(fill, dropped);
    }
    b->transmitted += sent;
    b->dropped += dropped;
    b->rx_bytes += bytes;
    b->tx_bytes += sent_bytes;
    return received;
}

uint64_t xdb_baseline_transmitted(const struct xdb_baseline *b) { return b->transmitted; }
uint64_t xdb_baseline_dropped(const struct xdb_baseline *b) { return b->dropped; }
uint64_t xdb_baseline_connections(const struct xdb_baseline *b) { return b->opened; }
