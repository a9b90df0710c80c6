# ZMQ.stats(): the counters the slot structs keep (ExchangeSlot, QueueSlot).
# The hot paths only add to them; reading them is here.
# (Included by _zmq.pyx: one extension module, one compilation unit.)


def _stats(_Core self):
    """([(eid, msgs, bytes, dropped, blocked_s, own bindings, binders), ...],
    [(qid, received, stashed, ready, sockets), ...]) of this instance's
    exchanges and queues.  stashed: messages a bind() read early, handed
    out first; ready: a message is waiting in one of the queue's sockets
    (libzmq tells whether one is there, not how many)."""
    self._check()
    cdef int i, j, ev
    cdef size_t n
    cdef ExchangeSlot *e
    cdef QueueSlot *q
    cdef list ex = [], qs = []
    stashed = collections.Counter(item[0] for item in self.stash.items)
    for i in range(self.nex):
        e = &self.ex[i]
        ex.append((self.idbase + i + 1, e.msgs, e.nbytes, e.dropped, e.blocked_s,
                   e.npush, _binders(self.svc, e)))
    for i in range(self.nq):
        q = &self.qs[i]
        qid = self.idbase + ID_QUEUE + i + 1
        ready = False
        for j in range(q.nsock):
            ev = 0
            n = sizeof(ev)
            if zmq_getsockopt(q.socks[j], ZMQ_EVENTS, &ev, &n) == 0 and ev & ZMQ_POLLIN:
                ready = True
        qs.append((qid, q.received, stashed.get(qid, 0), ready, q.nsock))
    return ex, qs
