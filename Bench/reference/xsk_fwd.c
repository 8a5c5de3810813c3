/* xsk_fwd.c: the benchmark's minimal AF_XDP reference forwarder, the cost of AF_XDP itself. Per queue, one
 * thread pinned to a core runs the same batch loop as the director's workers (completions back to fill,
 * peek RX, reserve TX, submit, kick) but only swaps the Ethernet addresses, and waits in poll() when idle.
 *
 * Usage: xdirector-bench-ref IFNAME QUEUES OBJECT [CORE...]
 *   OBJECT is the compiled bench_redirect.bpf.c (written out by xdirector-bench); it is attached in native
 *   mode (generic when refused) and detached on SIGINT/SIGTERM. Prints "ready" once forwarding. */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#define FRAMES 4096u
#define FRAME_SIZE 4096u
#define RING 2048u
#define BATCH 64u
#define MAX_QUEUES 64

struct queue {
    unsigned index;
    int core;
    void *area;
    struct xsk_umem *umem;
    struct xsk_socket *socket;
    struct xsk_ring_prod fill, tx;
    struct xsk_ring_cons completion, rx;
    unsigned in_flight;
    unsigned long long forwarded;
    pthread_t thread;
};

static atomic_int stopping;
static struct queue queues[MAX_QUEUES];

static void on_signal(int number) { (void)number; atomic_store(&stopping, 1); }

static void reclaim(struct queue *q)
{
    __u32 index, fill_index;
    unsigned done = xsk_ring_cons__peek(&q->completion, BATCH * 2, &index);
    if (!done)
        return;
    /* The fill ring holds every frame, so room for the completed ones always exists. */
    while (xsk_ring_prod__reserve(&q->fill, done, &fill_index) != done)
        ;
    for (unsigned i = 0; i < done; i++)
        *xsk_ring_prod__fill_addr(&q->fill, fill_index + i) = *xsk_ring_cons__comp_addr(&q->completion, index + i);
    xsk_ring_prod__submit(&q->fill, done);
    xsk_ring_cons__release(&q->completion, done);
    q->in_flight -= done;
}

static void kick(struct queue *q)
{
    if (xsk_ring_prod__needs_wakeup(&q->tx))
        sendto(xsk_socket__fd(q->socket), NULL, 0, MSG_DONTWAIT, NULL, 0);
}

static void *run(void *argument)
{
    struct queue *q = argument;
    char name[16];
    snprintf(name, sizeof(name), "xdb-ref-q%u", q->index);
    pthread_setname_np(pthread_self(), name);
    if (q->core >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(q->core, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    int fd = xsk_socket__fd(q->socket);
    while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
        reclaim(q);
        __u32 rx_index = 0, tx_index = 0;
        unsigned received = xsk_ring_cons__peek(&q->rx, BATCH, &rx_index);
        if (!received) {
            if (q->in_flight)
                kick(q);
            struct pollfd descriptor = { .fd = fd, .events = POLLIN };
            poll(&descriptor, 1, q->in_flight ? 1 : 100);
            continue;
        }
        unsigned slots = xsk_ring_prod__reserve(&q->tx, received, &tx_index);
        unsigned sent = 0, dropped = 0;
        __u64 recycled[BATCH];
        for (unsigned i = 0; i < received; i++) {
            const struct xdp_desc *in = xsk_ring_cons__rx_desc(&q->rx, rx_index + i);
            if (sent == slots || in->len < 12) {
                recycled[dropped++] = in->addr;
                continue;
            }
            unsigned char *frame = xsk_umem__get_data(q->area, in->addr);
            unsigned char mac[6];
            memcpy(mac, frame, 6);
            memcpy(frame, frame + 6, 6);
            memcpy(frame + 6, mac, 6);
            struct xdp_desc *out = xsk_ring_prod__tx_desc(&q->tx, tx_index + sent++);
            out->addr = in->addr;
            out->len = in->len;
            out->options = 0;
        }
        xsk_ring_cons__release(&q->rx, received);
        if (sent < slots)
            q->tx.cached_prod -= slots - sent;
        if (sent) {
            xsk_ring_prod__submit(&q->tx, sent);
            q->in_flight += sent;
            q->forwarded += sent;
            kick(q);
        }
        if (dropped) {
            __u32 fill_index;
            while (xsk_ring_prod__reserve(&q->fill, dropped, &fill_index) != dropped)
                ;
            for (unsigned i = 0; i < dropped; i++)
                *xsk_ring_prod__fill_addr(&q->fill, fill_index + i) = recycled[i];
            xsk_ring_prod__submit(&q->fill, dropped);
        }
        if (xsk_ring_prod__needs_wakeup(&q->fill))
            recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
    }
    return NULL;
}

static int open_queue(struct queue *q, const char *ifname)
{
    size_t length = (size_t)FRAMES * FRAME_SIZE;
    q->area = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (q->area == MAP_FAILED)
        return -errno;
    struct xsk_umem_config umem_config = {
        .fill_size = FRAMES, .comp_size = RING, .frame_size = FRAME_SIZE, .frame_headroom = 0, .flags = 0,
    };
    int result = xsk_umem__create(&q->umem, q->area, length, &q->fill, &q->completion, &umem_config);
    if (result)
        return result;
    struct xsk_socket_config config = {
        .rx_size = RING, .tx_size = RING,
        .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
        .bind_flags = XDP_USE_NEED_WAKEUP | XDP_ZEROCOPY,
    };
    result = xsk_socket__create(&q->socket, ifname, q->index, q->umem, &q->rx, &q->tx, &config);
    if (result) {
        config.bind_flags = XDP_USE_NEED_WAKEUP | XDP_COPY;
        result = xsk_socket__create(&q->socket, ifname, q->index, q->umem, &q->rx, &q->tx, &config);
    }
    if (result)
        return result;
    __u32 index;
    unsigned reserved = xsk_ring_prod__reserve(&q->fill, FRAMES, &index);
    for (unsigned i = 0; i < reserved; i++)
        *xsk_ring_prod__fill_addr(&q->fill, index + i) = (__u64)i * FRAME_SIZE;
    xsk_ring_prod__submit(&q->fill, reserved);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s IFNAME QUEUES OBJECT [CORE...]\n", argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    int count = atoi(argv[2]);
    int ifindex = (int)if_nametoindex(ifname);
    if (ifindex == 0 || count < 1 || count > MAX_QUEUES) {
        fprintf(stderr, "xdirector-bench-ref: bad interface or queue count\n");
        return 2;
    }
    struct bpf_object *object = bpf_object__open_file(argv[3], NULL);
    if (!object || bpf_object__load(object)) {
        fprintf(stderr, "xdirector-bench-ref: cannot load %s\n", argv[3]);
        return 1;
    }
    struct bpf_program *program = bpf_object__find_program_by_name(object, "xdirector_bench_redirect");
    struct bpf_map *map = bpf_object__find_map_by_name(object, "bench_xsks");
    if (!program || !map) {
        fprintf(stderr, "xdirector-bench-ref: the object lacks its program or map\n");
        return 1;
    }
    int program_fd = bpf_program__fd(program), map_fd = bpf_map__fd(map);
    __u32 flags = XDP_FLAGS_DRV_MODE;
    if (bpf_xdp_attach(ifindex, program_fd, flags, NULL)) {
        flags = XDP_FLAGS_SKB_MODE;
        if (bpf_xdp_attach(ifindex, program_fd, flags, NULL)) {
            fprintf(stderr, "xdirector-bench-ref: cannot attach XDP to %s\n", ifname);
            return 1;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int status = 0, started = 0;
    for (int i = 0; i < count; i++) {
        struct queue *q = &queues[i];
        q->index = (unsigned)i;
        q->core = 4 + i < argc ? atoi(argv[4 + i]) : -1;
        int result = open_queue(q, ifname);
        if (result) {
            fprintf(stderr, "xdirector-bench-ref: queue %d: %s\n", i, strerror(-result));
            status = 1;
            break;
        }
        int fd = xsk_socket__fd(q->socket);
        __u32 key = (__u32)i;
        if (bpf_map_update_elem(map_fd, &key, &fd, BPF_ANY) || pthread_create(&q->thread, NULL, run, q)) {
            fprintf(stderr, "xdirector-bench-ref: cannot start queue %d\n", i);
            status = 1;
            break;
        }
        started++;
    }
    if (!status) {
        printf("xdirector-bench-ref: forwarding on %s, %d queue%s; ready\n", ifname, count, count == 1 ? "" : "s");
        fflush(stdout);
        while (!atomic_load(&stopping))
            pause();
    }
    atomic_store(&stopping, 1);
    unsigned long long total = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(queues[i].thread, NULL);
        total += queues[i].forwarded;
    }
    bpf_xdp_detach(ifindex, flags, NULL);
    for (int i = 0; i < count; i++) {
        if (queues[i].socket)
            xsk_socket__delete(queues[i].socket);
        if (queues[i].umem)
            xsk_umem__delete(queues[i].umem);
        if (queues[i].area && queues[i].area != MAP_FAILED)
            munmap(queues[i].area, (size_t)FRAMES * FRAME_SIZE);
    }
    bpf_object__close(object);
    printf("xdirector-bench-ref: forwarded %llu frames\n", total);
    return status;
}
