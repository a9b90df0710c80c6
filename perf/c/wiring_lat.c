/*
 * wiring_lat local  <pull-endpoint> <xpub-endpoint> <message-size> <roundtrip-count> <mode>
 * wiring_lat remote <push-endpoint> <sub-endpoint>  <message-size> <roundtrip-count> <mode>
 *
 * pyzmq-wiring's latency path in plain C, to tell its shape from Python:
 * one way PUSH -> PULL, back XPUB (XPUB_NODROP) -> SUB, as between
 * perf/local_lat.py (global queue QL: a bound PULL; global exchange EL: a
 * bound XPUB) and perf/remote_lat.py (ER: a PUSH to QL; QR: a SUB to EL).
 *
 * local binds both and echoes roundtrip-count + 1 messages (the first is
 * the remote's untimed warm-up); before echoing it waits for the SUB's
 * subscription on the XPUB.  Its modes, how it waits for a message:
 *   poll    a non-blocking zmq_msg_recv on the PULL, then poll() on the
 *           ZMQ_FD of the PULL and of the XPUB, reading the XPUB's
 *           subscriptions when its fd turns readable, and again (what the
 *           extension's receive() did for an owner of a global exchange)
 *   block   a non-blocking zmq_msg_recv, then a blocking one on the PULL
 *           alone (receive()'s path for one input socket and no listener)
 *   direct  a blocking zmq_msg_recv on the PULL alone (what C's REP does)
 * remote connects both, sends, and waits for the echo on the SUB the same
 * way (mode block or direct); it prints the latency as remote_lat does.
 * Each side sends on what it received with zmq_msg_send, no copy, as
 * perf/local_lat.py and remote_lat.py do with a received Frame.
 */
#include "perf.h"

#include <poll.h>

enum mode { POLL, BLOCK, DIRECT };

static enum mode parse_mode (const char *s)
{
    if (strcmp (s, "poll") == 0)
        return POLL;
    if (strcmp (s, "block") == 0)
        return BLOCK;
    if (strcmp (s, "direct") == 0)
        return DIRECT;
    perf_fail ("unknown mode %s (poll, block or direct)", s);
    return DIRECT;
}

static int signal_fd (void *s)
{
    int fd;
    size_t len = sizeof fd;
    if (zmq_getsockopt (s, ZMQ_FD, &fd, &len) != 0)
        perf_fail_zmq ("zmq_getsockopt(ZMQ_FD)");
    return fd;
}

/* Read whatever subscriptions the XPUB has (what the owner's service pass
   does); returns how many. */
static int serve (void *xpub)
{
    int n = 0;
    zmq_msg_t m;
    zmq_msg_init (&m);
    while (zmq_msg_recv (&m, xpub, ZMQ_DONTWAIT) >= 0)
        n++;
    zmq_msg_close (&m);
    return n;
}

static void receive (zmq_msg_t *msg, void *s, void *xpub, struct pollfd *fds,
                     enum mode mode)
{
    if (mode == DIRECT) {
        while (zmq_msg_recv (msg, s, 0) < 0)
            if (errno != EINTR)
                perf_fail_zmq ("zmq_msg_recv");
        return;
    }
    if (zmq_msg_recv (msg, s, ZMQ_DONTWAIT) >= 0)
        return;
    if (errno != EAGAIN)
        perf_fail_zmq ("zmq_msg_recv");
    if (mode == BLOCK) {
        while (zmq_msg_recv (msg, s, 0) < 0)
            if (errno != EINTR)
                perf_fail_zmq ("zmq_msg_recv");
        return;
    }
    for (;;) {
        if (poll (fds, 2, -1) < 0 && errno != EINTR)
            perf_fail ("poll failed: %s", strerror (errno));
        if (fds[1].revents)
            serve (xpub);
        if (zmq_msg_recv (msg, s, ZMQ_DONTWAIT) >= 0)
            return;
        if (errno != EAGAIN)
            perf_fail_zmq ("zmq_msg_recv");
    }
}

static void usage (void)
{
    fprintf (stderr,
             "usage: wiring_lat local <pull-endpoint> <xpub-endpoint> <message-size> "
             "<roundtrip-count> poll|block|direct\n"
             "       wiring_lat remote <push-endpoint> <sub-endpoint> <message-size> "
             "<roundtrip-count> block|direct\n");
    exit (2);
}

int main (int argc, char **argv)
{
    uint64_t size, count;
    perf_tool = "wiring_lat";
    if (argc != 7 || perf_parse_uint (argv[4], 0, INT_MAX, &size) != 0
        || perf_parse_uint (argv[5], 1, INT64_MAX, &count) != 0)
        usage ();
    int local = strcmp (argv[1], "local") == 0;
    if (!local && strcmp (argv[1], "remote") != 0)
        usage ();
    enum mode mode = parse_mode (argv[6]);
    if (!local && mode == POLL)
        usage ();

    void *ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    void *in = zmq_socket (ctx, local ? ZMQ_PULL : ZMQ_SUB);
    void *out = zmq_socket (ctx, local ? ZMQ_XPUB : ZMQ_PUSH);
    if (!in || !out)
        perf_fail_zmq ("zmq_socket");
    perf_set_linger (in, 0);
    perf_set_linger (out, -1);
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    if (local) {
        int one = 1;
        if (zmq_setsockopt (out, ZMQ_XPUB_NODROP, &one, sizeof one) != 0)
            perf_fail_zmq ("zmq_setsockopt(ZMQ_XPUB_NODROP)");
        perf_bind (in, argv[2]);
        perf_bind (out, argv[3]);
        /* the SUB's subscription: from now on what the XPUB sends arrives */
        while (zmq_msg_recv (&msg, out, 0) < 0)
            if (errno != EINTR)
                perf_fail_zmq ("zmq_msg_recv(subscription)");
        struct pollfd fds[2] = {{signal_fd (in), POLLIN, 0}, {signal_fd (out), POLLIN, 0}};
        for (uint64_t i = 0; i <= count; i++) {
            receive (&msg, in, out, fds, mode);
            perf_check_size (zmq_msg_size (&msg), size, i);
            /* the message itself goes back, no copy (as C's local_lat
               does, and the extension with a received Frame) */
            if (zmq_msg_send (&msg, out, ZMQ_DONTWAIT) < 0)
                perf_fail_zmq ("zmq_msg_send");
        }
    } else {
        if (zmq_setsockopt (in, ZMQ_SUBSCRIBE, "", 0) != 0)
            perf_fail_zmq ("zmq_setsockopt(ZMQ_SUBSCRIBE)");
        perf_connect (in, argv[3]);
        perf_connect (out, argv[2]);
        char *buf = calloc (1, size ? size : 1);
        uint64_t start = 0;
        for (uint64_t i = 0; i <= count; i++) {
            if (i == 1)
                start = perf_now_ns ();     /* after the warm-up round trip */
            /* the first message from buf, then what came back, no copy
               (as perf/remote_lat.py does) */
            if (i == 0 ? zmq_send (out, buf, size, 0) < 0 : zmq_msg_send (&msg, out, 0) < 0)
                perf_fail_zmq ("zmq_send");
            receive (&msg, in, NULL, NULL, mode);
            perf_check_size (zmq_msg_size (&msg), size, i);
        }
        uint64_t elapsed = perf_now_ns () - start;
        free (buf);
        perf_print_lat (size, count, elapsed);
    }
    zmq_msg_close (&msg);
    zmq_close (in);
    zmq_close (out);
    zmq_ctx_term (ctx);
    return 0;
}
