"""The `frugal` command (launcher layer): up, bench, keys, fleet, status ...

It starts the services as children (supervisor.py) from a process that has gRPC loaded.
The supervisor's preexec_fn (PR_SET_PDEATHSIG) makes subprocess use a real fork() instead
of vfork(), so gRPC's pthread_atfork child handler runs in the child: with fork support on
(on by default in grpcio 1.85), it restarts the epoll poller thread there, then
close_fds closes that poller's epoll fd before exec, epoll_wait fails with EBADF ("epoll_wait
error: Bad file descriptor") and gRPC aborts the child before it execs: a service "killed by
SIGABRT during start-up" (grpc/grpc#43055; the epoll1 workaround of PR #43157 was declined).
No launcher forks a process that goes on using gRPC, so fork support is switched off here,
in the package every launcher imports first, before anything loads grpc.
"""

import os

os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
