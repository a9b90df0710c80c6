/* A relay's thread (bind() of a remote global exchange to a remote global
 * queue, in the binder's process): it passes single-frame messages from its
 * XSUB (on the exchange's listener) to its PUSH (to the queue's PULL), and
 * at close drains itself.  Plain C, no GIL; src/relay.pyx starts it.
 *
 * Every socket here is the thread's once it runs: the XSUB, the PUSH, the
 * control PAIR the owner's commands come on, and the two PAIRs that the
 * XSUB's and the PUSH's monitors write to (a watch each, as the service
 * thread keeps for an exchange's PUSHes: sv_watch in service.h).  The thread
 * reads those monitors as their events come (libzmq's I/O thread would block
 * on a full one), and the owner learns what it needs from a few ints the
 * thread publishes with atomic stores: the phase, what the PUSH's watch
 * says, whether a message waits for room.  No socket of a relay is ever
 * used by two threads.
 *
 * The owner's commands, on the control PAIR:
 *   DRAIN  stop taking from the exchange in a defined way, pass on what was
 *          taken, then queue a close marker behind it (src/drain.pyx) and end
 *          once libzmq let go of it: everything before it left this process;
 *   STOP   end now, counting what it held and drops (the message waiting
 *          for room, the rest of the stash, what the XSUB holds); the PUSH
 *          keeps its linger, for a consumer that is gone and comes back;
 *   DROP   end now, counting as STOP does and what the PUSH's pipe may
 *          hold (the close timeout ran out); the PUSH's linger is set to 0.
 * The thread never waits for anything but its poll(), which includes the
 * control PAIR, so a command is seen at once.
 *
 * The defined stop: the XSUB unsubscribes from everything and from the
 * bind's sync topic, and subscribes to a new sync topic (one pipe, in that
 * order).  The exchange's owner answers that sync (its service thread) after
 * it took the unsubscription in, so every message it published to this
 * relay came before the answer, and none after it: what comes before the
 * answer is passed on.  An XSUB, not a SUB: a SUB filters what it receives
 * by its own subscriptions, so it would drop what was in flight when it
 * unsubscribed.  An exchange whose listener is not connected any more
 * (its watch says so) sends nothing more: what the XSUB holds is then all.
 */
#ifndef PYZMQ_WIRING_RELAY_H
#define PYZMQ_WIRING_RELAY_H

#include "service.h"

/* The close marker (src/drain.pyx): MARKER_SIZE bytes lent to libzmq, whose
 * free callback sets the int its hint points to. */
#define PZW_MARKER_SIZE 65536
static char pzw_marker_data[PZW_MARKER_SIZE];
static void pzw_marker_free(void *data, void *hint)
{
    (void)data;
    __atomic_store_n((int *)hint, 1, __ATOMIC_RELEASE);
}
static int pzw_marker_done(int *flag)
{
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

/* Queue a marker (two frames: every receiver drops it) on s, flag turning 1
 * when libzmq lets go of it.  0: queued; EAGAIN: no room; else an errno. */
static int pzw_marker_send(void *s, int *flag)
{
    zmq_msg_t m;
    int err;
    if (zmq_msg_init_data(&m, pzw_marker_data, PZW_MARKER_SIZE, pzw_marker_free, flag) != 0)
        return zmq_errno();
    if (zmq_msg_send(&m, s, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        err = zmq_errno();
        zmq_msg_close(&m);      /* calls the callback: not a marker that left */
        __atomic_store_n(flag, 0, __ATOMIC_RELEASE);
        return err == EINTR ? EAGAIN : err;
    }
    /* the second frame goes with the first: a multipart message is queued
     * whole or not at all */
    if (zmq_send(s, "", 0, ZMQ_DONTWAIT) < 0)
        return zmq_errno();
    return 0;
}

/* a relay's phase (pzr.phase) */
#define PZR_RUN 0       /* passing on */
#define PZR_DRAIN 1     /* unsubscribed: passing on until the exchange's answer */
#define PZR_MARK 2      /* all taken in: passing on the rest, then the marker */
#define PZR_MARKED 3    /* the marker is queued */
#define PZR_LEFT 4      /* libzmq let go of it: everything passed on left */

#define PZR_BATCH 256   /* messages passed on between two looks at the commands */

typedef struct pzr {
    void *sub, *push, *ctl;
    sv_watch pw, sw;            /* the PUSH's and the XSUB's watches (mon NULL: none) */
    zmq_msg_t *stash;           /* what the XSUB delivered while binding: first */
    int nstash;
    char sync_topic[SV_TOPIC_MAX];  /* the bind's (stays subscribed until the drain) */
    size_t sync_len;
    char end_topic[SV_TOPIC_MAX];   /* the drain's */
    size_t end_len;
    /* published for the owner (atomic) */
    int phase;
    int pstate, pups;           /* the PUSH's watch: SV_NEW/UP/DOWN, handshakes */
    int blocked;                /* a message waits for room in the PUSH */
    int ended;                  /* the thread closed its sockets and ends */
    long long fwd;              /* messages passed on */
    long long lost;             /* at the end (STOP, DROP): messages held and dropped */
} pzr;

static inline int pzr_get(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void pzr_set(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline long long pzr_get64(long long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static void pzr_read_watches(pzr *r)
{
    if (r->pw.mon != NULL) {
        sv_watch_read_locked(&r->pw);
        pzr_set(&r->pstate, r->pw.state);
        pzr_set(&r->pups, r->pw.ups);
    }
    if (r->sw.mon != NULL)
        sv_watch_read_locked(&r->sw);
}

static void pzr_unwatch(sv_watch *w)
{
    if (w->mon == NULL)
        return;
    sv_watch_read_locked(w);    /* a monitor writing to a full PAIR holds its stop */
    zmq_socket_monitor(w->sock, NULL, 0);
    zmq_close(w->mon);
    w->mon = NULL;
}

/* The drain's first step: unsubscribe, then ask for the end answer. */
static int pzr_unsubscribe(pzr *r)
{
    char m[SV_TOPIC_MAX + 1];
    m[0] = 0;
    if (zmq_send(r->sub, m, 1, ZMQ_DONTWAIT) < 0)
        return -1;
    if (r->sync_len) {
        memcpy(m + 1, r->sync_topic, r->sync_len);
        if (zmq_send(r->sub, m, r->sync_len + 1, ZMQ_DONTWAIT) < 0)
            return -1;
    }
    m[0] = 1;
    memcpy(m + 1, r->end_topic, r->end_len);
    return zmq_send(r->sub, m, r->end_len + 1, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

/* Drop the rest of a multipart message. */
static void pzr_drop_rest(void *s)
{
    zmq_msg_t m;
    int more = 1;
    while (more) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
}

/* The thread's whole life.  Ends on STOP or DROP, after the drain's marker
 * left, or on a socket failure (ETERM: the context is going). */
static void pzr_run(pzr *r)
{
    zmq_msg_t msg;
    zmq_pollitem_t it[4];
    char cmd[8];
    int pending = 0, si = 0, intake_done = 0, drop = 0, fail = 0;
    int n, io, rc, count, timeout, marked_looks = 0, hwm, pdown;
    size_t sz;
    int *flag = (int *)calloc(1, sizeof(int));
    long long lost = 0;
    /* a process's signals (Ctrl-C) are for the threads that run Python:
     * this one runs none until it returns, and a signal the kernel gave it
     * would only set Python's flag, unseen by the main thread's wait */
    sv_block_signals(NULL);
    if (flag == NULL)
        fail = 1;
    while (!fail) {
        pzr_read_watches(r);
        /* the owner's commands */
        for (;;) {
            rc = zmq_recv(r->ctl, cmd, sizeof cmd, ZMQ_DONTWAIT);
            if (rc < 0)
                break;
            if (rc == 5 && memcmp(cmd, "DRAIN", 5) == 0) {
                if (pzr_get(&r->phase) == PZR_RUN) {
                    if (pzr_unsubscribe(r) != 0)
                        intake_done = 1;    /* cannot ask: what it holds is all */
                    pzr_set(&r->phase, PZR_DRAIN);
                }
            } else {
                drop = rc == 4 && memcmp(cmd, "DROP", 4) == 0;
                goto end;
            }
        }
        /* pass on, PZR_BATCH at most before looking at the commands again */
        count = 0;
        while (count < PZR_BATCH) {
            if (!pending && si < r->nstash) {
                zmq_msg_init(&msg);
                zmq_msg_move(&msg, &r->stash[si++]);
                pending = 1;
            }
            if (!pending && !intake_done) {
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, r->sub, ZMQ_DONTWAIT) < 0) {
                    rc = zmq_errno();
                    zmq_msg_close(&msg);
                    if (rc != EAGAIN && rc != EINTR) {
                        fail = 1;
                        break;
                    }
                    /* draining, and the exchange's listener is gone: it
                     * sends nothing more, so this was all */
                    if (pzr_get(&r->phase) == PZR_DRAIN && r->sw.mon != NULL
                            && r->sw.state == SV_DOWN)
                        intake_done = 1;
                    break;
                }
                if (zmq_msg_more(&msg)) {
                    /* a sync answer: ours ends the drain's intake; others
                     * are dropped, as every receiver drops them */
                    sz = zmq_msg_size(&msg);
                    if (pzr_get(&r->phase) == PZR_DRAIN && sz == r->end_len
                            && memcmp(zmq_msg_data(&msg), r->end_topic, sz) == 0)
                        intake_done = 1;
                    zmq_msg_close(&msg);
                    pzr_drop_rest(r->sub);
                    continue;
                }
                pending = 1;
            }
            if (!pending)
                break;
            if (zmq_msg_send(&msg, r->push, ZMQ_DONTWAIT) >= 0) {
                pending = 0;
                __atomic_add_fetch(&r->fwd, 1, __ATOMIC_RELEASE);
                count++;
                continue;
            }
            rc = zmq_errno();
            if (rc != EAGAIN && rc != EINTR)
                fail = 1;
            break;
        }
        if (fail)
            break;
        pzr_set(&r->blocked, pending);
        if (intake_done && !pending && si >= r->nstash && pzr_get(&r->phase) == PZR_DRAIN)
            pzr_set(&r->phase, PZR_MARK);
        /* not into the pipe of a consumer that is gone (the drain gives
         * the relay up when it sees that): a marker that can never be
         * written would only hold the PUSH, and the context at exit, for
         * its linger */
        pdown = r->pw.mon != NULL && r->pw.state == SV_DOWN;
        if (pzr_get(&r->phase) == PZR_MARK && !pdown) {
            rc = pzw_marker_send(r->push, flag);
            if (rc == 0)
                pzr_set(&r->phase, PZR_MARKED);
            else if (rc != EAGAIN)
                break;
        }
        if (pzr_get(&r->phase) == PZR_MARKED && pzw_marker_done(flag)) {
            pzr_set(&r->phase, PZR_LEFT);
            break;              /* everything it passed on left: its work is done */
        }
        /* wait: for a command, a monitor event, room or a message */
        n = 0;
        it[n].socket = r->ctl; it[n].fd = 0; it[n].events = ZMQ_POLLIN; n++;
        if (r->pw.mon != NULL) {
            it[n].socket = r->pw.mon; it[n].fd = 0; it[n].events = ZMQ_POLLIN; n++;
        }
        if (r->sw.mon != NULL) {
            it[n].socket = r->sw.mon; it[n].fd = 0; it[n].events = ZMQ_POLLIN; n++;
        }
        io = 0;
        if (pending || (pzr_get(&r->phase) == PZR_MARK && !pdown)) {
            it[n].socket = r->push; it[n].events = ZMQ_POLLOUT; io = 1;
        } else if (!intake_done) {
            it[n].socket = r->sub; it[n].events = ZMQ_POLLIN; io = 1;
        }
        if (io) {
            it[n].fd = 0;
            n++;
        }
        if (count >= PZR_BATCH)
            timeout = 0;
        else if (pzr_get(&r->phase) == PZR_MARKED)
            /* libzmq says nothing when it lets go of the marker: look
             * again soon (as close() does for an exchange's markers) */
            timeout = marked_looks++ < 5 ? 1 : 5;
        else
            timeout = -1;
        for (rc = 0; rc < n; rc++)
            it[rc].revents = 0;
        if (zmq_poll(it, n, timeout) < 0 && zmq_errno() != EINTR)
            break;
    }
end:
    if (pending) {
        zmq_msg_close(&msg);
        lost++;
    }
    for (; si < r->nstash; si++) {
        zmq_msg_close(&r->stash[si]);
        lost++;
    }
    if (!fail) {
        /* STOP or DROP: what reached this process and will not be passed
         * on is what the XSUB holds now (libzmq drops it when the socket
         * closes, linger 0).  Counted up to two marks' worth: a stream
         * still coming in (not drained, or no end answer yet) is not
         * counted for ever.  After the end answer nothing it holds is the
         * relay's, and a failed socket (ETERM) is not read. */
        sz = sizeof hwm;
        if (zmq_getsockopt(r->sub, ZMQ_RCVHWM, &hwm, &sz) != 0 || hwm <= 0)
            hwm = 1000;
        for (count = 0; count < 2 * hwm + 1 && !intake_done; ) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, r->sub, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            if (zmq_msg_more(&msg)) {
                /* a sync answer; ours ends what is the relay's */
                sz = zmq_msg_size(&msg);
                if (pzr_get(&r->phase) == PZR_DRAIN && sz == r->end_len
                        && memcmp(zmq_msg_data(&msg), r->end_topic, sz) == 0)
                    intake_done = 1;
                zmq_msg_close(&msg);
                pzr_drop_rest(r->sub);
                continue;
            }
            zmq_msg_close(&msg);
            count++;
        }
        lost += count;
    }
    if (drop) {
        /* the close timeout ran out: also what the PUSH's pipe may still
         * hold (STOP leaves that to the PUSH's linger, for a consumer
         * that comes back) */
        if (pzr_get(&r->phase) < PZR_LEFT) {
            sz = sizeof hwm;
            if (zmq_getsockopt(r->push, ZMQ_SNDHWM, &hwm, &sz) != 0 || hwm <= 0)
                hwm = 1000;
            lost += r->fwd < hwm + 1 ? r->fwd : hwm + 1;
        }
        hwm = 0;
        zmq_setsockopt(r->push, ZMQ_LINGER, &hwm, sizeof hwm);
    }
    pzr_read_watches(r);
    pzr_unwatch(&r->pw);
    pzr_unwatch(&r->sw);
    zmq_close(r->sub);
    zmq_close(r->push);
    zmq_close(r->ctl);
    r->sub = r->push = r->ctl = NULL;
    free(r->stash);
    r->stash = NULL;
    r->nstash = 0;
    /* a marker libzmq still holds sets its flag when it drops it: the int
     * is left to it */
    if (flag != NULL && (pzr_get(&r->phase) < PZR_MARKED || pzw_marker_done(flag)))
        free(flag);
    __atomic_store_n(&r->lost, lost, __ATOMIC_RELEASE);
    pzr_set(&r->ended, 1);
}

#endif
