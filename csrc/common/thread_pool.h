// One persistent pool of worker threads for the whole process, shared by decoding, tokenizing and search, and
// one thread budget: the CPUs this process may run on (its affinity mask), capped by its cgroup's CPU quota,
// unless set_thread_budget() says otherwise. Workers start on first use (and again in a forked child, which
// inherits no threads); a worker that cannot be started is an error for the caller, never std::terminate.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace mmserve::threads {

// The CPUs usable by this process: sched_getaffinity's count, capped by the cgroup v2 (cpu.max) or v1
// (cpu.cfs_quota_us / cpu.cfs_period_us) quota, rounded up; at least 1.
int detected_cpus();
// The quota of a cgroup CPU limit in the text of cpu.max ("max 100000", "150000 100000"), in CPUs rounded up;
// 0 when unlimited or unreadable. Exposed for tests.
int cpus_from_cgroup_max(const std::string& text);

// How many threads work runs on at most when a call asks for 0 ("all"): set_thread_budget()'s value, else the
// environment's MMSERVE_NATIVE_THREADS, else detected_cpus().
int thread_budget();
// 0: back to detected_cpus(). Applies to calls that start after it.
void set_thread_budget(int threads);

// Runs work(i) for every i in [0, count) on up to `threads` threads (0: the budget; never more than count),
// the calling thread included. Blocks until all are done. The first exception thrown by `work` is rethrown
// here, after the others finished; std::system_error from starting a worker becomes std::runtime_error.
void parallel_for(size_t count, int threads, const std::function<void(size_t)>& work);

}  // namespace mmserve::threads
