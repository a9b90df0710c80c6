/*
 * local_thr <bind-endpoint> <message-size> <message-count>
 *
 * Throughput test, receiving side: a PULL socket bound to the endpoint
 * receives message-count messages and checks the size of each.  The clock
 * starts when the first message arrives and stops when the last one has
 * been received, so connection setup is never measured.  As in libzmq's own
 * perf tools, the rate is message-count divided by that interval (the first
 * message is counted although its transfer is not timed; negligible for
 * the counts used in a benchmark).
 */
#include "perf.h"

int main (int argc, char **argv)
{
    struct perf_args args;
    perf_parse_args ("local_thr", "bind-endpoint", "message-count", argc,
                     argv, &args);

    void *ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    void *sock = zmq_socket (ctx, ZMQ_PULL);
    if (!sock)
        perf_fail_zmq ("zmq_socket(ZMQ_PULL)");
    perf_bind (sock, args.endpoint);

    zmq_msg_t msg;
    if (zmq_msg_init (&msg) != 0)
        perf_fail_zmq ("zmq_msg_init");

    if (zmq_msg_recv (&msg, sock, 0) < 0)
        perf_fail_zmq ("zmq_msg_recv");
    uint64_t start = perf_now_ns ();
    perf_check_size (zmq_msg_size (&msg), args.size, 0);

    for (uint64_t i = 1; i < args.count; i++) {
        /* zmq_msg_recv releases the previous content of msg itself. */
        if (zmq_msg_recv (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_recv");
        perf_check_size (zmq_msg_size (&msg), args.size, i);
    }
    uint64_t elapsed = perf_now_ns () - start;
    zmq_msg_close (&msg);

    perf_close (sock, ctx);
    perf_print_thr (args.size, args.count, elapsed);
    return 0;
}
