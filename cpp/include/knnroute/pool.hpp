// A process-wide, blocking worker pool for splitting ONE query's rows over cores.
//
// Workers sleep on a condition variable between jobs (no spinning: on a 2-core machine a spinning
// pool steals the core another process's query needs). The caller runs task 0 itself and waits for
// the rest. One job at a time: if another thread holds the pool, try_run returns false and the caller
// does the work alone (concurrent route_one calls from many threads never queue behind each other).
// In a process forked after the workers started (multiprocessing "fork"), the pool reports one thread
// and every job runs on the caller: the child has no workers to wait for.
#pragma once

#include <functional>

namespace knnroute {

// Threads available to one job (workers + the caller), >= 1. Workers start on first use.
int pool_threads();

// Runs fn(t) for t in [0, n_tasks) with t = 0 on the calling thread, the others on workers
// (n_tasks <= pool_threads()). Returns false without running anything if the pool is busy.
// Rethrows the first exception a task threw, on the caller's thread.
bool pool_try_run(int n_tasks, const std::function<void(int)>& fn);

}  // namespace knnroute
