#include <signal.h>
/* alloccount.c: an LD_PRELOAD library that counts heap allocations (malloc, calloc, realloc,
 * posix_memalign, aligned_alloc, memalign) made by the threads of a process under test whose names start
 * with XDB_ALLOC_PREFIX (default "xd-q", the director's workers), and every XDB_ALLOC_INTERVAL_MS (default
 * 20) rewrites XDB_ALLOC_FILE with "<monotonic ns> <worker allocations> <all allocations>\n", so the
 * benchmark can difference two readings around its measured window. Without XDB_ALLOC_FILE it only counts.
 *
 * Threads are recognised when they name themselves (pthread_setname_np is interposed too), so allocations
 * a worker makes before naming itself are counted as the process's, not the worker's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ullong worker_allocations;
static atomic_ullong all_allocations;
static __thread int is_worker;
static char prefix[16] = "xd-q";

static inline void counted(void)
{
    atomic_fetch_add_explicit(&all_allocations, 1, memory_order_relaxed);
    if (is_worker)
        atomic_fetch_add_explicit(&worker_allocations, 1, memory_order_relaxed);
}

void *malloc(size_t size) { counted(); return __libc_malloc(size); }
void *calloc(size_t count, size_t size) { counted(); return __libc_calloc(count, size); }
void *realloc(void *pointer, size_t size) { counted(); return __libc_realloc(pointer, size); }
void *memalign(size_t alignment, size_t size) { counted(); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { counted(); return __libc_memalign(alignment, size); }

int posix_memalign(void **out, size_t alignment, size_t size)
{
    counted();
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)))
        return 22; /* EINVAL */
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer)
        return 12; /* ENOMEM */
    *out = pointer;
    return 0;
}

int pthread_setname_np(pthread_t thread, const char *name)
{
    static int (*next)(pthread_t, const char *);
    if (!next)
        next = (int (*)(pthread_t, const char *))dlsym(RTLD_NEXT, "pthread_setname_np");
    if (pthread_equal(thread, pthread_self()))
        is_worker = strncmp(name, prefix, strlen(prefix)) == 0;
    return next ? next(thread, name) : 0;
}

static void *report(void *argument)
{
    /* This thread exists before the director blocks its signals: keep SIGHUP/SIGINT/SIGTERM away from it,
     * or their default action would end the process instead of reaching the director's handler. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    const char *path = argument;
    char temporary[4096], line[96];
    snprintf(temporary, sizeof(temporary), "%s.tmp", path);
    const char *interval = getenv("XDB_ALLOC_INTERVAL_MS");
    long milliseconds = interval ? atol(interval) : 20;
    if (milliseconds < 1)
        milliseconds = 1;
    struct timespec pause = { milliseconds / 1000, (milliseconds % 1000) * 1000000L };
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int length = snprintf(line, sizeof(line), "%llu %llu %llu\n",
                              (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec,
                              atomic_load(&worker_allocations), atomic_load(&all_allocations));
        int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line, (size_t)length) == length)
                rename(temporary, path);
            close(fd);
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void)
{
    const char *wanted = getenv("XDB_ALLOC_PREFIX");
    if (wanted)
        snprintf(prefix, sizeof(prefix), "%s", wanted);
    const char *path = getenv("XDB_ALLOC_FILE");
    if (!path || !*path)
        return;
    static char copy[4000];
    snprintf(copy, sizeof(copy), "%s", path);
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_create(&thread, &attributes, report, copy);
    pthread_attr_destroy(&attributes);
}
