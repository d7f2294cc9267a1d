// What the CPU kernels share: the aot entry-point convention, a dtype check, per-thread scratch
// memory and a minimal parallel-for.
//
// Why not OpenMP for the parallel-for: after a parallel region its worker threads keep spinning, and on a small
// machine they take a core from the MindSpore operators that run next (the kernels made
// SSD inference at batch 1 slower, not faster). The workers here sleep between calls; waking
// them costs ~10 microseconds, so small calls stay on the calling thread.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

// Defines the aot entry point NAME, which MindSpore calls as
//   int NAME(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
//            void* stream, void* extra)
// with the inputs first and the outputs last, as IMPL(nparam, params, ndims, shapes, dtypes).
#define MS_ZOO_AOT_ENTRY(NAME, IMPL)                                                               \
  extern "C" int NAME(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, \
                      void*, void*) {                                                               \
    return IMPL(nparam, params, ndims, shapes, dtypes);                                            \
  }

namespace ms_zoo {

inline int64_t usable_cores() {
  static const int64_t cores = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return static_cast<int64_t>(std::max(1, CPU_COUNT(&set)));
    return static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return cores;
}

// Whether params[first..last) are all float32 tensors (the kernels handle nothing else; a
// non-zero return makes MindSpore raise instead of reading float16 data as float32).
inline bool all_float32(const char** dtypes, int first, int last) {
  for (int i = first; i < last; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

// Upper clamp of a fused activation: 1 ReLU, 6 ReLU6 (0, none, never reaches a clamp).
constexpr float clamp_high(int activation) {
  return activation == 6 ? 6.f : std::numeric_limits<float>::infinity();
}

// A folded BatchNorm's bias followed by a ReLU/ReLU6 clamp to [0, high].
inline float bias_clamp(float v, float bias, float high) { return std::min(std::max(v + bias, 0.f), high); }

#if defined(__AVX2__)
// Lanes [0, n) set (n clamped to [0, 8]), for the masked loads and stores of a partial vector.
inline __m256i first_lanes(int64_t n) {
  static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t lanes = std::max<int64_t>(0, std::min<int64_t>(8, n));
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - lanes));
}
#endif

// Scratch memory of the calling thread, grown as needed and reused across planes and calls;
// Slot tells apart the buffers one thread uses at the same time.
template <int Slot>
float* scratch(int64_t size) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// Worker threads started once per library and woken for each parallel call. Starting and
// joining a thread per call cost 35-135 microseconds here, a wake-up through a condition
// variable about 10. Waiting workers sleep (no spinning) so they never take a core from the
// MindSpore operators that run next.
class WorkerPool {
 public:
  // The pool of this library: usable_cores() - 1 workers, the caller being the last thread.
  static WorkerPool& get() {
    static WorkerPool* pool = new WorkerPool(usable_cores() - 1);  // never destroyed: workers may outlive exit()
    return *pool;
  }

  // Calls job(t) for t in [0, threads), job(0) on the calling thread, and returns when all
  // are done. A second caller while the workers are busy (MindSpore may launch independent
  // kernels side by side), a call from a forked child (which has no workers) and a call for
  // more threads than the pool has all run every part on the calling thread instead.
  template <class Job>
  void run(int64_t threads, const Job& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy || threads - 1 > static_cast<int64_t>(workers_) || getpid() != owner_) {
      for (int64_t t = 0; t < threads; ++t) job(t);
      return;
    }
    std::function<void(int64_t)> task = [&job](int64_t t) { job(t); };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      parts_ = threads;
      remaining_ = threads - 1;
      ++generation_;
    }
    wake_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return remaining_ == 0; });
    task_ = nullptr;
  }

 private:
  explicit WorkerPool(int64_t workers) : workers_(std::max<int64_t>(0, workers)), owner_(getpid()) {
    for (int64_t w = 1; w <= workers_; ++w) std::thread([this, w] { serve(w); }).detach();
  }

  void serve(int64_t part) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (part >= parts_) continue;
      const std::function<void(int64_t)>* task = task_;
      lock.unlock();
      (*task)(part);
      lock.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  const int64_t workers_;
  const pid_t owner_;
  std::mutex busy_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t parts_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

// Calls fn(i) for every i in [0, n) on up to usable_cores() threads, each taking runs of
// consecutive indices as it gets to them (calls of fn must be independent); `work` is the
// total number of element operations, to keep small calls single-threaded.
template <class F>
void parallel_for(int64_t n, int64_t work, F fn) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  int64_t threads = std::min({usable_cores(), n, std::max<int64_t>(1, work / kMinWorkPerThread)});
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // Claimed runs rather than fixed shares: a worker that wakes late (MindSpore's own threads
  // spin between operators and can hold the other core) then delays only the runs it takes,
  // not half the call. CRNN at batch 1 (median of 300 runs, three processes each): 9.4-9.9 ms
  // with fixed halves, 8.6-9.8 ms with claimed runs.
  const int64_t grain = std::max<int64_t>(1, n / (threads * 8));
  std::atomic<int64_t> next{0};
  WorkerPool::get().run(threads, [&](int64_t) {
    for (;;) {
      const int64_t begin = next.fetch_add(grain, std::memory_order_relaxed);
      if (begin >= n) return;
      const int64_t end = std::min(n, begin + grain);
      for (int64_t i = begin; i < end; ++i) fn(i);
    }
  });
}

}  // namespace ms_zoo
