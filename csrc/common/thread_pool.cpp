#include "common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace mmserve::threads {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int cgroup_v1_cpus() {
  long long quota = 0, period = 0;
  std::istringstream(read_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) >> quota;
  std::istringstream(read_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us")) >> period;
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<int>((quota + period - 1) / period);
}

// This process's cgroup v2 directory, from /proc/self/cgroup ("0::/path").
std::string cgroup_v2_dir() {
  std::istringstream lines(read_file("/proc/self/cgroup"));
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  return "/sys/fs/cgroup";
}

// A batch of work: indices handed out one at a time to whoever runs it (the caller and the workers that
// picked up one of its tokens before the caller finished).
struct Job {
  size_t count;
  const std::function<void(size_t)>* work;
  std::atomic<size_t> next{0};
  std::mutex mutex;
  std::condition_variable done;
  int running = 0;        // workers inside run()
  bool closed = false;    // the caller has finished: late workers do nothing
  std::exception_ptr error;

  void run() {
    for (size_t i = next++; i < count; i = next++) {
      try {
        (*work)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
};

// Never destroyed: its workers wait for work until the process exits (and a forked child, which has none of
// them, starts a pool of its own).
class Pool {
 public:
  // Starts workers up to `wanted` (they stay for the process's life).
  void ensure(int wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < wanted) {
      try {
        workers_.emplace_back([this] { loop(); });
      } catch (const std::system_error& error) {
        throw std::runtime_error(std::string("cannot start a worker thread: ") + error.what() + " (" +
                                 std::to_string(workers_.size()) + " running; lower the thread budget)");
      }
    }
  }

  void submit(const std::shared_ptr<Job>& job, int tokens) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (int t = 0; t < tokens; ++t) queue_.push_back(job);
    }
    if (tokens == 1) wake_.notify_one();
    else wake_.notify_all();
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      {
        std::lock_guard<std::mutex> lock(job->mutex);
        if (job->closed) continue;
        ++job->running;
      }
      job->run();
      {
        std::lock_guard<std::mutex> lock(job->mutex);
        --job->running;
      }
      job->done.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
};

std::atomic<int> budget_override{0};
std::mutex pool_mutex;
Pool* pool = nullptr;

Pool& shared_pool() {
  std::lock_guard<std::mutex> lock(pool_mutex);
  if (pool == nullptr) {
    pool = new Pool();
#if defined(__linux__)
    // A forked child inherits the pool's memory but none of its threads: it starts afresh (the old one leaks).
    static const bool registered = [] { return pthread_atfork(nullptr, nullptr, [] { pool = nullptr; }) == 0; }();
    (void)registered;
#endif
  }
  return *pool;
}

}  // namespace

int cpus_from_cgroup_max(const std::string& text) {
  std::istringstream in(text);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  long long value = 0;
  try {
    value = std::stoll(quota);
  } catch (const std::exception&) {
    return 0;
  }
  return value > 0 ? static_cast<int>((value + period - 1) / period) : 0;
}

int detected_cpus() {
  int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
#endif
  int quota = cpus_from_cgroup_max(read_file(cgroup_v2_dir() + "/cpu.max"));
  if (quota == 0) quota = cgroup_v1_cpus();
  if (quota > 0) cpus = std::min(cpus, quota);
  return std::max(1, cpus);
}

int thread_budget() {
  const int set = budget_override.load();
  if (set > 0) return set;
  static const int detected = [] {
    // The one knob, for a process that cannot call set_thread_budget (a Triton model, say).
    if (const char* value = std::getenv("MMSERVE_NATIVE_THREADS")) {
      const int threads = std::atoi(value);
      if (threads > 0) return threads;
    }
    return detected_cpus();
  }();
  return detected;
}

void set_thread_budget(int threads) {
  if (threads < 0) throw std::invalid_argument("the thread budget must be 0 (detect) or positive");
  budget_override = threads;
}

void parallel_for(size_t count, int threads, const std::function<void(size_t)>& work) {
  if (count == 0) return;
  if (threads < 0) throw std::invalid_argument("threads must be 0 (the budget) or positive");
  const size_t wanted = std::min<size_t>(count, static_cast<size_t>(threads > 0 ? threads : thread_budget()));
  if (wanted <= 1) {
    for (size_t i = 0; i < count; ++i) work(i);
    return;
  }
  Pool& workers = shared_pool();
  workers.ensure(static_cast<int>(wanted) - 1);
  auto job = std::make_shared<Job>();
  job->count = count;
  job->work = &work;
  workers.submit(job, static_cast<int>(wanted) - 1);
  job->run();
  std::unique_lock<std::mutex> lock(job->mutex);
  job->closed = true;
  job->done.wait(lock, [&] { return job->running == 0; });
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace mmserve::threads
