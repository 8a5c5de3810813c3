// Helpers for what Swift cannot import: CPU_SET macros and friends.
#define _GNU_SOURCE
#include <sched.h>
#include <pthread.h>
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "cxdp.h"

int cxdp_pin_thread_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int cxdp_current_cpu(void) { return sched_getcpu(); }

int cxdp_unpin_thread(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int cxdp_thread_id(void) { return (int)syscall(SYS_gettid); }

int cxdp_pin_thread_id_to_cpu(int tid, int cpu) {
    cpu_set_t set;
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof(set), &set) == 0 ? 0 : errno;
}

int cxdp_cpu_allowed(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &set);
}

void cxdp_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

struct bpf_object *cxdp_object_open_mem(const void *data, size_t size, const char *name) {
    LIBBPF_OPTS(bpf_object_open_opts, options, .object_name = name);
    return bpf_object__open_mem(data, size, &options);
}

int cxdp_xdp_attach(int ifindex, int prog_fd, __u32 flags, int expected_fd) {
    LIBBPF_OPTS(bpf_xdp_attach_opts, options, .old_prog_fd = expected_fd);
    if (expected_fd >= 0) return bpf_xdp_attach(ifindex, prog_fd, flags | XDP_FLAGS_REPLACE, &options);
    return bpf_xdp_attach(ifindex, prog_fd, flags, NULL);
}

int cxdp_xdp_detach(int ifindex, __u32 flags, int expected_fd) {
    LIBBPF_OPTS(bpf_xdp_attach_opts, options, .old_prog_fd = expected_fd);
    return bpf_xdp_detach(ifindex, flags, &options);
}

int cxdp_xdp_query(int ifindex, __u32 *prog_id, __u8 *attach_mode) {
    LIBBPF_OPTS(bpf_xdp_query_opts, options);
    int result = bpf_xdp_query(ifindex, 0, &options);
    if (result) return result;
    *prog_id = options.prog_id;
    *attach_mode = options.attach_mode;
    return 0;
}

int cxdp_xdp_test_run(int prog_fd, const void *data, __u32 size, int ifindex, __u32 queue, __u32 *action,
                      void *out, __u32 *out_size, __u32 *meta_size) {
    struct xdp_md ctx = { .data_end = size, .ingress_ifindex = ifindex, .rx_queue_index = queue };
    struct xdp_md ctx_out = { 0 };
    LIBBPF_OPTS(bpf_test_run_opts, options, .data_in = data, .data_size_in = size, .ctx_in = &ctx,
                .ctx_size_in = sizeof(ctx), .repeat = 1);
    if (out) {
        options.data_out = out;
        options.data_size_out = *out_size;
        options.ctx_out = &ctx_out;
        options.ctx_size_out = sizeof(ctx_out);
    }
    int result = bpf_prog_test_run_opts(prog_fd, &options);
    if (result) return result;
    *action = options.retval;
    if (out) {
        *out_size = options.data_size_out;
        *meta_size = ctx_out.data;  /* the frame's offset after the metadata the program put in front */
    }
    return 0;
}
