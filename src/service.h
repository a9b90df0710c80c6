/* The service thread of one engine: it lets remote binders in while the
 * owner thread does anything at all (sleeps, computes, awaits).
 *
 * libzmq attaches a new subscriber to an XPUB, and hands over its
 * subscriptions, only when some thread uses that socket.  A socket is not
 * thread-safe, but it may be used by several threads one after another when
 * a full memory barrier separates them: here, one mutex per engine.  The
 * owner holds it whenever it uses one of its listeners (XPUBs); the service
 * thread holds it while it reads their subscriptions and answers sync
 * requests.  The thread is plain C: it never takes the GIL, so the owner may
 * wait for the mutex with the GIL held without any risk of deadlock, and the
 * mutex is only ever held for non-blocking libzmq calls (and, by the owner,
 * for a blocking send of at most SV_SEND_SLICE_MS).
 *
 * The thread sleeps in poll() on the listeners' signalling fds (ZMQ_FD) and
 * on a wake-up pipe.  Such an fd signals only new commands: when the owner's
 * own send on a listener has taken them in, the fd says nothing, so after
 * the owner has used a listener the thread looks again within SV_TOUCHED_MS;
 * while a sync answer is pending (its subscriber is full: XPUB_NODROP
 * refuses) it retries every SV_PENDING_MS.  An idle owner costs nothing.
 *
 * It also keeps, for each outgoing TCP PUSH of its instance, whether its
 * consumer is there (sv_watch): the PUSH's socket monitor sends its
 * connection events to a PAIR that only this thread reads (and the owner,
 * under the lock, at close).  libzmq writes monitor events with a blocking
 * send from its I/O thread, so a monitor nobody reads would stop that
 * thread once the PAIR is full (a PUSH whose consumer is gone retries
 * every 100 ms): this thread reads them as they come.  The PUSH itself is
 * the owner's and never touched here; its sends pay nothing for this.
 *
 * Stopping never waits: the owner marks the service stopped and forgets the
 * listeners under the mutex (from then on the thread touches no socket, so
 * the owner may close them at once), wakes the thread and leaves; whichever
 * of the two lets go last frees the structure.  Nothing in close() or
 * __dealloc__ joins a thread.  In a forked child nothing is touched: the
 * thread does not exist there, and the structure (whose mutex may have been
 * held at the fork) is left alone.
 */
#ifndef PYZMQ_WIRING_SERVICE_H
#define PYZMQ_WIRING_SERVICE_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define SV_TOPIC_MAX 64         /* a sync topic is the prefix + 16 bytes */
#define SV_TOUCHED_MS 20
#define SV_PENDING_MS 10
#define SV_SEND_SLICE_MS 5

typedef struct sv_sync {
    size_t len;
    char topic[SV_TOPIC_MAX];
} sv_sync;

typedef struct sv_listener {
    void *xpub;
    int fd;
    sv_sync *pending;           /* sync requests not answered yet */
    int npending, cap;
    int subscribers;            /* wiring binders: their sync topics stay subscribed */
} sv_listener;

/* What a watched PUSH's monitor said last (sv_watch.state). */
#define SV_NEW 0                /* nothing yet: connecting, or connected unseen */
#define SV_UP 1                 /* handshake succeeded, no disconnection since */
#define SV_DOWN 2               /* disconnected, or a connection attempt failed */
/* the events a watch asks for: none comes while the PUSH stays connected;
 * CONNECT_RETRIED comes every reconnect interval while it is not */
#define SV_WATCH_EVENTS (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED \
                         | ZMQ_EVENT_CONNECT_RETRIED)

/* Endpoints a re-pointed PUSH left (sv_watch_reset): their events are
 * not the current peer's.  libzmq keeps a disconnected endpoint's session
 * for the socket's linger, and its connecter retrying meanwhile, so
 * CONNECT_RETRIED of the old address kept coming after the new peer's
 * handshake and the watch said "down" of a connected PUSH (18 re-points
 * of 30 from a dead owner to a live one). */
#define SV_STALE_MAX 4          /* the last ones left; older ones are forgotten */
#define SV_EP_MAX 256

typedef struct sv_watch {
    void *sock;                 /* the PUSH: the owner's, never used here */
    void *mon;                  /* the PAIR its monitor events come to */
    int fd;                     /* mon's signalling fd */
    int state;                  /* SV_NEW, SV_UP, SV_DOWN */
    int ups;                    /* handshakes seen */
    char (*stale)[SV_EP_MAX];   /* SV_STALE_MAX endpoints left, or NULL */
    int nstale, next_stale;
} sv_watch;

typedef struct sv_service {
    pthread_mutex_t lock;
    int refs;                   /* the owner and the thread, under lock */
    int stop;
    int touched;                /* the owner used a listener since the last look */
    int asleep;                 /* the thread polls with no timeout: a touch must wake it */
    int started;
    int wake[2];                /* a pipe: wakes the thread up */
    sv_listener *ls;
    int nls;
    sv_watch *ws;
    int nws;
    char prefix[SV_TOPIC_MAX];
    size_t plen;
} sv_service;

/* A new service state in *out (its thread starts with the first listener
 * or watch).  Returns 0 or an errno: the wake-up pipe fails with EMFILE
 * when the process is out of file descriptors, which the caller must tell
 * apart from being out of memory. */
static int sv_new(sv_service **out, const char *prefix, size_t plen)
{
    int rc;
    if (plen >= SV_TOPIC_MAX)
        return EINVAL;
    sv_service *sv = (sv_service *)calloc(1, sizeof(sv_service));
    if (sv == NULL)
        return ENOMEM;
    if (pipe2(sv->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = errno;
        free(sv);
        return rc;
    }
    rc = pthread_mutex_init(&sv->lock, NULL);
    if (rc != 0) {
        close(sv->wake[0]);
        close(sv->wake[1]);
        free(sv);
        return rc;
    }
    sv->refs = 1;
    memcpy(sv->prefix, prefix, plen);
    sv->plen = plen;
    *out = sv;
    return 0;
}

static void sv_destroy(sv_service *sv)
{
    int i;
    for (i = 0; i < sv->nls; i++)
        free(sv->ls[i].pending);
    free(sv->ls);
    free(sv->ws);
    /* the last user is gone: a failed close (EINTR still frees the fd on
     * Linux) or destroy (the mutex is unlocked and unused by now) leaves
     * nothing to undo and nobody to tell */
    close(sv->wake[0]);
    close(sv->wake[1]);
    pthread_mutex_destroy(&sv->lock);
    free(sv);
}

static inline void sv_lock(sv_service *sv) { pthread_mutex_lock(&sv->lock); }
static inline void sv_unlock(sv_service *sv) { pthread_mutex_unlock(&sv->lock); }

static void sv_poke(sv_service *sv)
{
    char c = 1;
    ssize_t rc = write(sv->wake[1], &c, 1);     /* full pipe: already awake */
    (void)rc;
}

/* Under the lock: read every listener's subscriptions, keep the sync
 * requests, answer what can be answered.  Returns 0, or the errno of the
 * first unexpected failure (the request is dropped: its binder times out). */
static int sv_serve_locked(sv_service *sv)
{
    int i, rc, failed = 0;
    zmq_msg_t msg;
    for (i = 0; i < sv->nls; i++) {
        sv_listener *l = &sv->ls[i];
        for (;;) {
            zmq_msg_init(&msg);
            rc = zmq_msg_recv(&msg, l->xpub, ZMQ_DONTWAIT);
            if (rc < 0) {
                zmq_msg_close(&msg);
                break;
            }
            const char *data = (const char *)zmq_msg_data(&msg);
            size_t size = zmq_msg_size(&msg);
            if (size > sv->plen + 1 && size - 1 <= SV_TOPIC_MAX && data[0] == 1
                    && memcmp(data + 1, sv->prefix, sv->plen) == 0) {
                if (l->npending == l->cap) {
                    int cap = l->cap ? 2 * l->cap : 4;
                    sv_sync *p = (sv_sync *)realloc(l->pending, cap * sizeof(sv_sync));
                    if (p != NULL) {
                        l->pending = p;
                        l->cap = cap;
                    }
                }
                if (l->npending < l->cap) {
                    l->pending[l->npending].len = size - 1;
                    memcpy(l->pending[l->npending].topic, data + 1, size - 1);
                    l->npending++;
                } else if (!failed) {
                    failed = ENOMEM;
                }
                l->subscribers++;       /* a binder came (or came back) */
            } else if (size > sv->plen + 1 && data[0] == 0 && l->subscribers > 0
                    && memcmp(data + 1, sv->prefix, sv->plen) == 0) {
                l->subscribers--;       /* its socket went */
            }
            zmq_msg_close(&msg);
        }
        while (l->npending) {
            sv_sync *s = &l->pending[0];
            if (zmq_send(l->xpub, s->topic, s->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
                if (zmq_errno() == EAGAIN)
                    break;      /* a subscriber is full: again on the next pass */
                if (!failed)
                    failed = zmq_errno();
            } else if (zmq_send(l->xpub, "", 0, ZMQ_DONTWAIT) < 0 && !failed) {
                /* the second frame goes with the first: a multipart
                 * message is queued whole or not at all */
                failed = zmq_errno();
            }
            l->npending--;
            memmove(l->pending, l->pending + 1, l->npending * sizeof(sv_sync));
        }
    }
    return failed;
}

/* Whether an event's endpoint (data, size) is one w left.  Compared as
 * strings, which holds for host names too: libzmq 4.3 names a connecting
 * socket's events by the endpoint as given to zmq_connect (it resolves a
 * host name only when it opens a connection, after keeping the name), and
 * a left endpoint is that same string (_retarget is given the endpoint the
 * binding connected to).  Seen: a PUSH connected to tcp://localhost:P
 * gets CONNECTED, HANDSHAKE_SUCCEEDED and CONNECT_RETRIED as
 * tcp://localhost:P. */
static int sv_watch_is_stale(sv_watch *w, const char *data, size_t size)
{
    int i;
    for (i = 0; i < w->nstale; i++)
        if (strlen(w->stale[i]) == size && memcmp(w->stale[i], data, size) == 0)
            return 1;
    return 0;
}

/* Under the lock: take in the events waiting on watch w's monitor. */
static void sv_watch_read_locked(sv_watch *w)
{
    zmq_msg_t msg;
    unsigned short event = 0;
    int more = 0, first = 1;
    for (;;) {
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, w->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        /* an event is two frames: its number and value, then the endpoint
         * (applied once both came: an event of an endpoint left is not the
         * current peer's) */
        more = zmq_msg_more(&msg);
        if (first) {
            event = 0;
            if (zmq_msg_size(&msg) == 6)
                memcpy(&event, zmq_msg_data(&msg), 2);
        } else if (!sv_watch_is_stale(w, (const char *)zmq_msg_data(&msg), zmq_msg_size(&msg))) {
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                w->state = SV_UP;
                w->ups++;
            } else if (event == ZMQ_EVENT_DISCONNECTED || event == ZMQ_EVENT_CONNECT_RETRIED) {
                w->state = SV_DOWN;
            }
        }
        first = !more;
        zmq_msg_close(&msg);
    }
}

/* w's PUSH leaves endpoint old (may be NULL) for endpoint new: old's
 * events are ignored from now on, new's count again.  Returns 0 or ENOMEM
 * (then old's events still count). */
static int sv_watch_leave(sv_watch *w, const char *old, const char *new_)
{
    int i;
    for (i = 0; i < w->nstale; i++) {
        if (strcmp(w->stale[i], new_) == 0) {       /* back to one it left */
            memmove(w->stale[i], w->stale[w->nstale - 1], SV_EP_MAX);
            w->nstale--;
            w->next_stale = w->nstale;
            break;
        }
    }
    if (old == NULL || strcmp(old, new_) == 0 || strlen(old) >= SV_EP_MAX
            || sv_watch_is_stale(w, old, strlen(old)))
        return 0;
    if (w->stale == NULL) {
        w->stale = (char (*)[SV_EP_MAX])calloc(SV_STALE_MAX, SV_EP_MAX);
        if (w->stale == NULL)
            return ENOMEM;
    }
    if (w->next_stale >= SV_STALE_MAX)
        w->next_stale = 0;
    strcpy(w->stale[w->next_stale], old);
    w->next_stale++;
    if (w->nstale < SV_STALE_MAX)
        w->nstale++;
    return 0;
}

static void sv_watches_read_locked(sv_service *sv)
{
    int i;
    for (i = 0; i < sv->nws; i++)
        sv_watch_read_locked(&sv->ws[i]);
}

static sv_watch *sv_watch_find_locked(sv_service *sv, void *sock)
{
    int i;
    for (i = 0; i < sv->nws; i++)
        if (sv->ws[i].sock == sock)
            return &sv->ws[i];
    return NULL;
}

static int sv_npending(sv_service *sv)
{
    int i, n = 0;
    for (i = 0; i < sv->nls; i++)
        n += sv->ls[i].npending;
    return n;
}

static void *sv_run(void *arg)
{
    sv_service *sv = (sv_service *)arg;
    struct pollfd *pf = NULL;
    int cap = 0, n, nl, nw, i, timeout, last, rc;
    char buf[64];
    sv_lock(sv);
    while (!sv->stop) {
        nl = sv->nls;
        nw = sv->nws;
        n = nl + nw;
        if (n + 1 > cap) {
            struct pollfd *p = (struct pollfd *)realloc(pf, (n + 1) * sizeof(struct pollfd));
            if (p != NULL) {
                pf = p;
                cap = n + 1;
            }
        }
        if (n + 1 > cap) {
            /* cannot poll them all: look every SV_PENDING_MS instead */
            sv_unlock(sv);
            usleep(SV_PENDING_MS * 1000);
            sv_lock(sv);
            if (!sv->stop) {
                sv_serve_locked(sv);
                sv_watches_read_locked(sv);
            }
            continue;
        }
        pf[0].fd = sv->wake[0];
        pf[0].events = POLLIN;
        for (i = 0; i < nl; i++) {
            pf[i + 1].fd = sv->ls[i].fd;
            pf[i + 1].events = POLLIN;
        }
        for (i = 0; i < nw; i++) {
            pf[nl + i + 1].fd = sv->ws[i].fd;
            pf[nl + i + 1].events = POLLIN;
        }
        timeout = sv_npending(sv) ? SV_PENDING_MS : sv->touched ? SV_TOUCHED_MS : -1;
        sv->touched = 0;
        /* From here on the owner may take a listener's news in (its send
           reads the socket's commands) and leave its fd quiet: with no
           timeout, nothing would make this thread look (sv_touch_locked) */
        sv->asleep = timeout < 0;
        sv_unlock(sv);
        rc = poll(pf, n + 1, timeout);
        if (rc > 0 && pf[0].revents) {
            while (read(sv->wake[0], buf, sizeof buf) > 0)
                ;
        } else if (rc < 0 && errno != EINTR) {
            /* ENOMEM, or EINVAL once the open-file limit was lowered below
             * the fds polled: poll() would fail again at once, and looping
             * on it would spin a core.  Look every SV_PENDING_MS instead
             * (as when the poll set cannot grow) until it works again. */
            usleep(SV_PENDING_MS * 1000);
        }
        sv_lock(sv);
        sv->asleep = 0;
        if (sv->stop)
            break;
        /* a failed sync answer has nobody to be reported to here: its
         * binder's bind() times out and says so */
        sv_serve_locked(sv);
        sv_watches_read_locked(sv);
    }
    last = --sv->refs == 0;
    sv_unlock(sv);
    free(pf);
    if (last)
        sv_destroy(sv);
    return NULL;
}

/* Under the lock: start the thread if it is not running.  Returns 0 or an
 * errno. */

/* Block every signal in the calling thread but those of a fault in it
 * (SIGSEGV and the like: blocked, the kernel would kill the process
 * without running a handler, so no faulthandler trace); the old mask in
 * *old if not NULL.  For threads that run no Python: a process's signal
 * then goes to one that does, where Python's handler wakes its wait.
 * sigfillset, sigdelset and pthread_sigmask fail only on a bad argument. */
static void sv_block_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    sigdelset(&all, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

static int sv_start_locked(sv_service *sv)
{
    int rc;
    pthread_t t;
    pthread_attr_t attr;
    sigset_t old;
    if (sv->started)
        return 0;
    rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    /* These two fail only on arguments, constants here (EINVAL: a detach
     * state other than the two, a stack under PTHREAD_STACK_MIN, which is
     * 16 KiB on x86-64 Linux and 128 KiB on arm64); were they refused, the
     * thread would run joinable (nobody joins it: its stack stays after it
     * ends) or on the default stack, and work all the same. */
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    (void)pthread_attr_setstacksize(&attr, 256 * 1024);
    /* signals (Ctrl-C) are for the threads that run Python: the new
     * thread inherits the mask */
    sv_block_signals(&old);
    rc = pthread_create(&t, &attr, sv_run, sv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0) {
        sv->started = 1;
        sv->refs++;
    }
    return rc;
}

/* Under the lock: one more zeroed entry of `size` bytes at the end of the
 * array *arr of n, or NULL (out of memory: the array is as it was). */
static void *sv_append_locked(void **arr, int n, size_t size)
{
    char *p = (char *)realloc(*arr, (n + 1) * size);
    if (p == NULL)
        return NULL;
    *arr = p;
    memset(p + n * size, 0, size);
    return p + n * size;
}

/* Under the lock, after an entry was appended to a list of *n: start the
 * thread if it is not running (if it cannot start, the entry goes again),
 * unlock and wake it.  Returns 0 or an errno. */
static int sv_appended_unlock(sv_service *sv, int *n)
{
    int rc = sv_start_locked(sv);
    if (rc != 0)
        (*n)--;
    sv_unlock(sv);
    if (rc == 0)
        sv_poke(sv);
    return rc;
}

/* The owner adds a listener (a new XPUB nobody else uses yet) and starts
 * the thread on the first one.  Returns 0 or an errno. */
static int sv_add(sv_service *sv, void *xpub, int fd)
{
    sv_lock(sv);
    sv_listener *l = (sv_listener *)sv_append_locked((void **)&sv->ls, sv->nls,
                                                     sizeof(sv_listener));
    if (l == NULL) {
        sv_unlock(sv);
        return ENOMEM;
    }
    l->xpub = xpub;
    l->fd = fd;
    sv->nls++;
    return sv_appended_unlock(sv, &sv->nls);
}

/* The owner removes a listener it is about to close. */
static void sv_remove(sv_service *sv, void *xpub)
{
    int i;
    sv_lock(sv);
    for (i = 0; i < sv->nls; i++) {
        if (sv->ls[i].xpub == xpub) {
            free(sv->ls[i].pending);
            sv->ls[i] = sv->ls[sv->nls - 1];
            sv->nls--;
            break;
        }
    }
    sv_unlock(sv);
}

/* The owner watches PUSH sock through the PAIR mon that its monitor (of
 * SV_WATCH_EVENTS) sends to, starting in `state`; from here on mon is used
 * only under the lock.  Returns 0 or an errno (then nothing changed). */
static int sv_watch_add(sv_service *sv, void *sock, void *mon, int fd, int state)
{
    sv_lock(sv);
    sv_watch *w = (sv_watch *)sv_append_locked((void **)&sv->ws, sv->nws, sizeof(sv_watch));
    if (w == NULL) {
        sv_unlock(sv);
        return ENOMEM;
    }
    w->sock = sock;
    w->mon = mon;
    w->fd = fd;
    w->state = state;
    w->ups = state == SV_UP;     /* watched once connected (CURVE): it was up */
    sv->nws++;
    return sv_appended_unlock(sv, &sv->nws);
}

/* Stop watching sock (the owner is about to close it): its monitor is
 * stopped first, so libzmq never writes to a closed PAIR, then the PAIR is
 * closed.  Returns whether sock was watched. */
static int sv_watch_remove(sv_service *sv, void *sock)
{
    int i, found = 0;
    sv_lock(sv);
    for (i = 0; i < sv->nws; i++) {
        if (sv->ws[i].sock == sock) {
            /* read what waits first: libzmq stops a monitor under the
             * lock its I/O thread holds while it writes an event, and a
             * write to a full PAIR would wait for a reader */
            sv_watch_read_locked(&sv->ws[i]);
            /* both fail only on a socket that is not one (ENOTSOCK) or a
             * context being terminated (ETERM), where there is no monitor
             * left to stop; the owner is closing sock either way */
            zmq_socket_monitor(sock, NULL, 0);
            zmq_close(sv->ws[i].mon);
            free(sv->ws[i].stale);
            sv->ws[i] = sv->ws[sv->nws - 1];
            sv->nws--;
            found = 1;
            break;
        }
    }
    sv_unlock(sv);
    if (found)
        sv_poke(sv);            /* it polls that fd no more */
    return found;
}

/* What sock's monitor has said so far, taking in what is waiting: SV_NEW,
 * SV_UP or SV_DOWN, or -1 when sock is not watched; *ups (if not NULL):
 * its handshakes so far. */
static int sv_watch_state(sv_service *sv, void *sock, int *ups)
{
    int state = -1;
    sv_lock(sv);
    sv_watch *w = sv_watch_find_locked(sv, sock);
    if (w != NULL) {
        sv_watch_read_locked(w);
        state = w->state;
        if (ups != NULL)
            *ups = w->ups;
    }
    sv_unlock(sv);
    return state;
}

/* sock left endpoint old (NULL: none) and is about to connect to new:
 * forget what its monitor said of the old peer (read first), and ignore
 * old's events from now on (sv_watch_leave).  Returns whether sock is
 * watched. */
static int sv_watch_reset(sv_service *sv, void *sock, const char *old, const char *new_)
{
    sv_lock(sv);
    sv_watch *w = sv_watch_find_locked(sv, sock);
    if (w != NULL) {
        sv_watch_read_locked(w);
        sv_watch_leave(w, old, new_);
        w->state = SV_NEW;
        w->ups = 0;
    }
    sv_unlock(sv);
    return w != NULL;
}

/* The owner lets go, before it closes its sockets: the thread stops
 * touching sockets at once (it only uses them under the lock, and finds
 * stop set), and ends on its own. */
static void sv_release(sv_service *sv)
{
    int i, last;
    sv_lock(sv);
    sv->stop = 1;
    for (i = 0; i < sv->nls; i++)
        free(sv->ls[i].pending);
    free(sv->ls);
    sv->ls = NULL;
    sv->nls = 0;
    /* the watched PUSHes are still open: their monitors stop before
     * the PAIRs close (see sv_watch_remove) */
    for (i = 0; i < sv->nws; i++) {
        sv_watch_read_locked(&sv->ws[i]);       /* see sv_watch_remove (and why */
        zmq_socket_monitor(sv->ws[i].sock, NULL, 0);    /* these go unchecked) */
        zmq_close(sv->ws[i].mon);
        free(sv->ws[i].stale);
        sv->ws[i].stale = NULL;
    }
    sv->nws = 0;
    last = --sv->refs == 0;
    if (!last)
        sv_poke(sv);            /* before unlocking: the thread frees sv */
    sv_unlock(sv);
    if (last)
        sv_destroy(sv);
}

static inline int sv_subscribers_locked(sv_service *sv, void *xpub)
{
    int i;
    for (i = 0; i < sv->nls; i++)
        if (sv->ls[i].xpub == xpub)
            return sv->ls[i].subscribers;
    return 0;
}

/* How many wiring binders listener xpub has (their sync subscriptions). */
static int sv_subscribers(sv_service *sv, void *xpub)
{
    int n;
    pthread_mutex_lock(&sv->lock);
    n = sv_subscribers_locked(sv, xpub);
    pthread_mutex_unlock(&sv->lock);
    return n;
}

/* Under the lock, after the owner used a listener: the thread looks again
 * within SV_TOUCHED_MS, and is woken first if it sleeps with no timeout
 * (one write, once per idle spell: the flag is cleared here and when it
 * wakes). */
static inline void sv_touch_locked(sv_service *sv)
{
    sv->touched = 1;
    if (sv->asleep) {
        sv->asleep = 0;
        sv_poke(sv);
    }
}

/* The owner's send on a listener: under the lock, marking it touched;
 * with binders, also how many wiring binders it has (under the same lock).
 * errno is kept across the unlock for the caller's zmq_errno(). */
static inline int sv_send(sv_service *sv, void *s, const void *data, size_t size, int flags,
                          int *binders)
{
    int rc, err;
    pthread_mutex_lock(&sv->lock);
    rc = zmq_send(s, data, size, flags);
    err = errno;
    sv_touch_locked(sv);
    if (binders != NULL)
        *binders = sv_subscribers_locked(sv, s);
    pthread_mutex_unlock(&sv->lock);
    errno = err;
    return rc;
}

static inline int sv_msg_send(sv_service *sv, zmq_msg_t *m, void *s, int flags)
{
    int rc, err;
    pthread_mutex_lock(&sv->lock);
    rc = zmq_msg_send(m, s, flags);
    err = errno;
    sv_touch_locked(sv);
    pthread_mutex_unlock(&sv->lock);
    errno = err;
    return rc;
}

#endif
