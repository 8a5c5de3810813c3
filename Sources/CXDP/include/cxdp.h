/* cxdp.h: what the Swift data plane imports from libxdp, libbpf and the kernel's uapi headers, plus
 * small helpers for the macros and inline functions Swift cannot see. */
#ifndef CXDP_H
#define CXDP_H
#include <xdp/xsk.h>
#include <xdp/libxdp.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/rtnetlink.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/vfs.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include "xdirector_shared.h"

/* Pins the calling thread to one CPU. Returns 0 or an errno value. */
int cxdp_pin_thread_to_cpu(int cpu);
/* The CPU the calling thread is running on. */
int cxdp_current_cpu(void);
/* Number of CPUs the process may run on (its affinity mask), and whether `cpu` is in that mask. */
int cxdp_cpu_allowed(int cpu);
/* Names the calling thread (shown by ps/top), at most 15 characters. */
void cxdp_set_thread_name(const char *name);
/* Lets the calling thread run on every CPU again (undoes cxdp_pin_thread_to_cpu); returns 0 or an errno value. */
int cxdp_unpin_thread(void);
/* The calling thread's kernel id (the tid of /proc/<pid>/task/<tid>). */
int cxdp_thread_id(void);
/* Moves thread `tid` to `cpu` (sched_setaffinity); returns 0 or an errno value. */
int cxdp_pin_thread_id_to_cpu(int tid, int cpu);

/* libbpf option structs made as libbpf's LIBBPF_OPTS macro makes them (every byte zeroed, `sz` set): a struct
 * built in Swift leaves its padding undefined, which libbpf refuses ("non-zero extra bytes"). */
/* Opens a BPF object from memory under `name`; NULL with errno set on failure. */
struct bpf_object *cxdp_object_open_mem(const void *data, size_t size, const char *name);
/* Attaches `prog_fd` to `ifindex` with `flags` (XDP_FLAGS_*); with `expected_fd` >= 0 the attach replaces
 * exactly that program (XDP_FLAGS_REPLACE), atomically. Returns 0 or a negative errno. */
int cxdp_xdp_attach(int ifindex, int prog_fd, __u32 flags, int expected_fd);
/* Detaches the program from `ifindex` only if it is still `expected_fd`. Returns 0 or a negative errno. */
int cxdp_xdp_detach(int ifindex, __u32 flags, int expected_fd);
/* Runs XDP program `prog_fd` once on `size` bytes of `data` (BPF_PROG_RUN), as if received on queue `queue`
 * of interface `ifindex`; its action in `*action`. With `out` (room for `*out_size` bytes), the frame as the
 * program left it, its XDP metadata in front: `*out_size` bytes in all, `*meta_size` of them metadata.
 * Returns 0 or a negative errno. */
int cxdp_xdp_test_run(int prog_fd, const void *data, __u32 size, int ifindex, __u32 queue, __u32 *action,
                      void *out, __u32 *out_size, __u32 *meta_size);
/* The attached program's id and mode (XDP_ATTACHED_*) on `ifindex`; 0 or a negative errno. */
int cxdp_xdp_query(int ifindex, __u32 *prog_id, __u8 *attach_mode);

/* Asks the CPU to bring the cache line at `address` in for a read soon (no fault on any address): the worker
 * issues it for the next frames' connection-table lines while it works on the current ones. */
static inline void cxdp_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

#endif
