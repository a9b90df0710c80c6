/*
 * percall <calls>
 * percall --once <sends> <receives>
 *
 * The C side of perf/percall.py: nanoseconds per zmq_send and per
 * zmq_msg_recv of a 1-byte message on an inproc PUSH/PULL pair in one
 * thread, high-water marks off (0), so no send ever waits; the same shape
 * as pyzmq-wiring's local binding (an exchange's PUSH connected to a
 * queue's PULL over inproc).
 *
 * Worker mode (the default), driven by percall.py: prints "ready", then
 * for every line "run" on stdin times <calls> non-blocking sends followed
 * by <calls> non-blocking receives into one reused zmq_msg_t, and prints
 * "<ns per send> <ns per receive>".  Any other line, or end of input, ends
 * it.
 *
 * --once: makes the pair, does <sends> sends then <receives> receives,
 * exits: for instruction counts under valgrind (percall.py --callgrind runs
 * it with several counts and takes the differences).
 */
#include "perf.h"

static void *ctx, *push, *pull;

static void setup (void)
{
    int zero = 0;
    ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    push = zmq_socket (ctx, ZMQ_PUSH);
    pull = zmq_socket (ctx, ZMQ_PULL);
    if (!push || !pull)
        perf_fail_zmq ("zmq_socket");
    if (zmq_setsockopt (push, ZMQ_SNDHWM, &zero, sizeof zero) != 0
        || zmq_setsockopt (pull, ZMQ_RCVHWM, &zero, sizeof zero) != 0)
        perf_fail_zmq ("zmq_setsockopt(HWM)");
    perf_set_linger (push, 0);
    perf_set_linger (pull, 0);
    perf_bind (pull, "inproc://percall");
    perf_connect (push, "inproc://percall");
}

static void sends (uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (zmq_send (push, "x", 1, ZMQ_DONTWAIT) != 1)
            perf_fail_zmq ("zmq_send");
}

static void receives (zmq_msg_t *msg, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (zmq_msg_recv (msg, pull, ZMQ_DONTWAIT) != 1)
            perf_fail_zmq ("zmq_msg_recv");
}

int main (int argc, char **argv)
{
    uint64_t calls, nsend, nrecv;
    zmq_msg_t msg;
    char line[64];

    perf_tool = "percall";
    if (argc == 4 && strcmp (argv[1], "--once") == 0) {
        if (perf_parse_uint (argv[2], 0, INT64_MAX, &nsend) != 0
            || perf_parse_uint (argv[3], 0, INT64_MAX, &nrecv) != 0
            || nrecv > nsend)
            perf_fail ("--once needs <sends> >= <receives> >= 0");
        setup ();
        zmq_msg_init (&msg);
        sends (nsend);
        receives (&msg, nrecv);
        zmq_msg_close (&msg);
        zmq_close (push);
        zmq_close (pull);
        zmq_ctx_term (ctx);
        return 0;
    }
    if (argc != 2 || perf_parse_uint (argv[1], 1, INT64_MAX, &calls) != 0) {
        fprintf (stderr, "usage: percall <calls> | percall --once <sends> <receives>\n");
        return 2;
    }
    setup ();
    zmq_msg_init (&msg);
    printf ("ready %s\n", "libzmq");
    fflush (stdout);
    while (fgets (line, sizeof line, stdin) && strcmp (line, "run\n") == 0) {
        uint64_t t0 = perf_now_ns ();
        sends (calls);
        uint64_t t1 = perf_now_ns ();
        receives (&msg, calls);
        uint64_t t2 = perf_now_ns ();
        printf ("%.2f %.2f\n", (double) (t1 - t0) / (double) calls,
                (double) (t2 - t1) / (double) calls);
        fflush (stdout);
    }
    zmq_msg_close (&msg);
    zmq_close (push);
    zmq_close (pull);
    zmq_ctx_term (ctx);
    return 0;
}
