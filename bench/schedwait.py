#!/usr/bin/env python3
"""bench/schedwait.py SECONDS: every second, for each sealpushd, redis-server and sealpush-bench
process, the CPU time it ran and the time its threads waited in the run queue for a CPU (ms,
summed over threads, from /proc/PID/task/TID/schedstat). A process that waits about as long as
it runs is queueing for the cores: its latency tail is the scheduler's. Relays are named by
the 4844x/4845x port of bench/cluster-bench.sh when they use one."""
import os
import sys
import time

def snap():
    out = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit(): continue
        try:
            comm = open('/proc/%s/comm' % pid).read().strip()
            if comm not in ('sealpushd', 'redis-server', 'sealpush-bench'): continue
            args = open('/proc/%s/cmdline' % pid).read().split('\0')
            port = next((a for a in args if a.startswith('127.0.0.1:4844') or a.startswith('127.0.0.1:4845')), '')
            key = '%s%s/%s' % (comm, port[-6:], pid)
            run = wait = 0
            for t in os.listdir('/proc/%s/task' % pid):
                r, w, _ = open('/proc/%s/task/%s/schedstat' % (pid, t)).read().split()
                run += int(r); wait += int(w)
            out[key] = (run, wait)
        except Exception:
            pass
    return out
prev = snap()
for i in range(int(sys.argv[1])):
    time.sleep(1)
    cur = snap()
    line = []
    for k, (r, w) in sorted(cur.items()):
        if k in prev:
            dr, dw = (r - prev[k][0]) / 1e6, (w - prev[k][1]) / 1e6
            if dr > 5: line.append('%s run=%.0f wait=%.0f' % (k, dr, dw))
    print(time.strftime('%H:%M:%S'), ' | '.join(line), flush=True)
    prev = cur
