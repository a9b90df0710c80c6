/*
 * Shared helpers for the C reference perf tools (local_lat, remote_lat,
 * local_thr, remote_thr).  Each tool is a single translation unit
 * (`cc -O2 tool.c -lzmq`); the helpers are static inline so that a tool not
 * calling one of them gets no unused-function warning.
 *
 * Conventions shared by all four tools (and by the Python tools that print
 * the same lines):
 *   - arguments: <endpoint> <message-size> <count>, decimal digits only;
 *     message-size in [0, INT_MAX], count in [1, INT64_MAX];
 *   - bad arguments: usage text on stderr, exit status 2;
 *   - runtime failure (bind/connect, send/recv error, wrong message size):
 *     one line on stderr, exit status 1;
 *   - clock: CLOCK_MONOTONIC via clock_gettime, nanosecond resolution.
 */
#ifndef PERF_H_INCLUDED
#define PERF_H_INCLUDED

#define _POSIX_C_SOURCE 200809L

#include <zmq.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct perf_args
{
    const char *endpoint;
    size_t size;    /* bytes per message */
    uint64_t count; /* round trips or messages */
};

/* Name of the running tool, used as prefix of every diagnostic. */
static const char *perf_tool = "perf";

static inline void perf_fail (const char *fmt, ...)
{
    va_list ap;
    fprintf (stderr, "%s: ", perf_tool);
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fputc ('\n', stderr);
    exit (1);
}

/* Report a failed libzmq call (errno set by libzmq) and exit 1. */
static inline void perf_fail_zmq (const char *what)
{
    perf_fail ("%s failed: %s", what, zmq_strerror (errno));
}

/* Parse a non-empty string of ASCII decimal digits into [min, max].
   Signs, spaces, hex and trailing junk are rejected.  Returns 0 on success. */
static inline int perf_parse_uint (const char *s, uint64_t min,
                                   uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned) (*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1; /* would overflow */
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static inline void perf_usage (const char *endpoint_name,
                               const char *count_name, const char *problem)
{
    if (problem)
        fprintf (stderr, "%s: %s\n", perf_tool, problem);
    fprintf (stderr,
             "usage: %s <%s> <message-size> <%s>\n"
             "  message-size: bytes per message, 0..%d\n"
             "  %s: 1..%lld\n",
             perf_tool, endpoint_name, count_name, INT_MAX, count_name,
             (long long) INT64_MAX);
    exit (2);
}

/* Parse argv for "<endpoint> <message-size> <count>"; exits 2 on error.
   count_name is the third argument's name in the usage text. */
static inline void perf_parse_args (const char *tool,
                                    const char *endpoint_name,
                                    const char *count_name, int argc,
                                    char **argv, struct perf_args *args)
{
    uint64_t v;

    perf_tool = tool;
    if (argc != 4)
        perf_usage (endpoint_name, count_name, NULL);
    if (argv[1][0] == '\0')
        perf_usage (endpoint_name, count_name, "endpoint must not be empty");
    args->endpoint = argv[1];
    if (perf_parse_uint (argv[2], 0, INT_MAX, &v) != 0)
        perf_usage (endpoint_name, count_name, "invalid message-size");
    args->size = (size_t) v;
    if (perf_parse_uint (argv[3], 1, INT64_MAX, &v) != 0)
        perf_usage (endpoint_name, count_name, "invalid count");
    args->count = v;
}

static inline uint64_t perf_now_ns (void)
{
    struct timespec ts;
    if (clock_gettime (CLOCK_MONOTONIC, &ts) != 0)
        perf_fail ("clock_gettime failed: %s", strerror (errno));
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Fail loudly when message number `index` (0-based) has the wrong size. */
static inline void perf_check_size (size_t got, size_t expected,
                                    uint64_t index)
{
    if (got != expected)
        perf_fail ("message %llu has %zu bytes, expected %zu",
                   (unsigned long long) index, got, expected);
}

static inline void perf_set_linger (void *sock, int linger)
{
    if (zmq_setsockopt (sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
        perf_fail_zmq ("zmq_setsockopt(ZMQ_LINGER)");
}

static inline void perf_bind (void *sock, const char *endpoint)
{
    if (zmq_bind (sock, endpoint) != 0)
        perf_fail ("cannot bind to %s: %s", endpoint, zmq_strerror (errno));
}

static inline void perf_connect (void *sock, const char *endpoint)
{
    if (zmq_connect (sock, endpoint) != 0)
        perf_fail ("cannot connect to %s: %s", endpoint,
                   zmq_strerror (errno));
}

static inline void perf_close (void *sock, void *ctx)
{
    if (zmq_close (sock) != 0)
        perf_fail_zmq ("zmq_close");
    /* zmq_ctx_term blocks until every socket's linger has run out, i.e.
       (with linger -1) until all queued messages have been handed to TCP. */
    while (zmq_ctx_term (ctx) != 0) {
        if (errno != EINTR)
            perf_fail_zmq ("zmq_ctx_term");
    }
}

/* Throughput report, printed by local_thr.  msg/s is truncated to an
   integer and Mb/s is derived from that integer, so the two lines agree:
   Mb/s = msg/s * size * 8 / 1e6. */
static inline void perf_print_thr (size_t size, uint64_t count,
                                   uint64_t elapsed_ns)
{
    if (elapsed_ns == 0)
        elapsed_ns = 1; /* count 1: nothing measurable, avoid dividing by 0 */
    double rate = (double) count * 1e9 / (double) elapsed_ns;
    unsigned long long msgs = (unsigned long long) rate;
    double mbits = (double) msgs * (double) size * 8.0 / 1e6;
    printf ("message size: %zu [B]\n", size);
    printf ("message count: %llu\n", (unsigned long long) count);
    printf ("mean throughput: %llu [msg/s]\n", msgs);
    printf ("mean throughput: %.3f [Mb/s]\n", mbits);
}

/* Latency report, printed by remote_lat: one-way latency is half the
   average round trip. */
static inline void perf_print_lat (size_t size, uint64_t count,
                                   uint64_t elapsed_ns)
{
    double latency_us = (double) elapsed_ns / 1e3 / ((double) count * 2.0);
    printf ("message size: %zu [B]\n", size);
    printf ("roundtrip count: %llu\n", (unsigned long long) count);
    printf ("average latency: %.3f [us]\n", latency_us);
}

#endif
