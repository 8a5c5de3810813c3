/* bench_shared.h: constants shared by the benchmark's BPF programs and the Swift bench (which repeats them
 * in BenchBPF.swift; keep both in step). */
#ifndef XDIRECTOR_BENCH_SHARED_H
#define XDIRECTOR_BENCH_SHARED_H

/* Per-CPU counters of the sink (`sink_counters`) and of the reflector (`reflect_counters`, index 0/1 only). */
#define XDB_RX 0          /* frames seen */
#define XDB_RX_BYTES 1    /* their bytes */
#define XDB_OK 2          /* frames carrying the expected rewrite */
#define XDB_BAD 3         /* frames that do not */
#define XDB_PROBES 4      /* timestamped probes seen */
#define XDB_MAX_NS 5      /* largest probe latency seen on this CPU */
#define XDB_HITS 6        /* frames matching expected entry i, at XDB_HITS + i (XDB_EXPECT_SLOTS of them) */
#define XDB_COUNTERS 14

/* What the sink expects of forwarded frames (`sink_config[0]`). */
#define XDB_MODE_ANY 0    /* references: count only */
#define XDB_MODE_DR 1     /* destination MAC is one of the expected MACs */
#define XDB_MODE_TUN 2    /* outer IPv4 destination is one of the expected addresses */
#define XDB_MODE_NAT 3    /* IPv4 destination and L4 destination port are one of the expected pairs */

/* `sink_expect`: up to 8 entries; a MAC in the low 48 bits (network byte order as read from the frame),
 * or an IPv4 address (network order, low 32 bits) with the port (network order) in bits 32..47. 0 = unused. */
#define XDB_EXPECT_SLOTS 8

/* Latency histogram: 1 µs buckets, the last one collects everything slower. */
#define XDB_LATENCY_BUCKETS 8192
/* Marks a probe: the first 4 bytes of the L4 payload, followed by 4 pad bytes and a CLOCK_MONOTONIC ns stamp. */
#define XDB_PROBE_MAGIC 0x50424458u /* "XDBP" read little-endian */

#endif
