/* engine_baseline.h: the C baseline of the director's per-packet work, for `xdirector-bench engine`. */
#ifndef ENGINE_BASELINE_H
#define ENGINE_BASELINE_H
#include <stdint.h>

struct xdb_baseline;

/* A baseline with a connection table for `capacity` connections (slots: a power of two, at least twice the
 * capacity, at least 64, as the director's) sending from `interface_mac`. NULL when out of memory. */
struct xdb_baseline *xdb_baseline_create(uint32_t capacity, const uint8_t interface_mac[6]);
void xdb_baseline_destroy(struct xdb_baseline *baseline);

/* Adds a DR service: `address` is 16 bytes (IPv4 in the first 4, network order), `port` host order,
 * `macs` the servers' MACs, 6 bytes each. Returns its index, or -1 when the service table is full. */
int xdb_baseline_add_service(struct xdb_baseline *baseline, uint8_t family, const uint8_t address[16],
                             uint16_t port, uint8_t proto, uint32_t servers, const uint8_t *macs);

/* One turn of the worker's batch loop over an AF_XDP queue's rings (`struct xsk_ring_prod *` for fill and
 * tx, `struct xsk_ring_cons *` for completion and rx), whose chunks of `frame_size` bytes lie in `area`:
 * completions back to fill, peek up to 64 RX, reserve as many TX, process, submit, give back unused
 * reservations, return drops to fill. `now` is in seconds. Returns the frames received. */
uint32_t xdb_baseline_batch(struct xdb_baseline *baseline, void *fill, void *completion, void *rx, void *tx,
                            void *area, uint32_t frame_size, uint32_t now);

/* Frames transmitted, dropped, and connections opened so far. */
uint64_t xdb_baseline_transmitted(const struct xdb_baseline *baseline);
uint64_t xdb_baseline_dropped(const struct xdb_baseline *baseline);
uint64_t xdb_baseline_connections(const struct xdb_baseline *baseline);

#endif
