// Fiber stacks at scale and at their limits: 100,000 guarded stacks alive at
// once under Linux's default vm.max_map_count, a stack overflow that dies
// with a clear message, and the EAGAIN / ENOMEM answers of
// bthread_start_background when fibers or memory run out.
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/butex.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/compiler.h"
#include "sched/fiber_lifecycle.h"
#include "sched/stack_pool.h"
#include "sched/task_meta.h"
#include "test_util.h"

DECLARE_int64(weft_max_fibers);

namespace {

using weft::test::kScale;
using weft::test::wait_until;
using std::chrono::milliseconds;

// Linux's default vm.max_map_count.
constexpr int kDefaultMaxMapCount = 65530;

int count_maps() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

// A field of /proc/self/status in KiB (VmSize, VmRSS), or -1.
long status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const size_t len = strlen(field);
  while (std::getline(status, line)) {
    if (line.compare(0, len, field) == 0 && line.size() > len && line[len] == ':') {
      return std::strtol(line.c_str() + len + 1, nullptr, 10);
    }
  }
  return -1;
}

// True when the running kernel is at least major.minor.
bool kernel_at_least(int major, int minor) {
  utsname u;
  if (uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

// Fibers that stay alive (blocked on one gate butex) until released.
struct Blockers {
  std::atomic<int>* gate = weft::butex_create_checked<std::atomic<int>>();
  std::atomic<int> started{0};
  std::vector<bthread_t> tids;

  static void* body(void* arg) {
    auto* self = static_cast<Blockers*>(arg);
    self->started.fetch_add(1);
    while (self->gate->load() == 0) weft::butex_wait(self->gate, 0, nullptr);
    return nullptr;
  }

  // Starts one more; returns bthread_start_background's answer.
  int start(const bthread_attr_t* attr) {
    bthread_t tid;
    const int rc = bthread_start_background(&tid, attr, body, this);
    if (rc == 0) tids.push_back(tid);
    return rc;
  }

  bool all_started() const {
    return wait_until([&] { return started.load() == static_cast<int>(tids.size()); },
                      milliseconds(120000));
  }

  // Releases and joins them all.
  void release() {
    gate->store(1);
    weft::butex_wake_all(gate);
    for (bthread_t t : tids) EXPECT_EQ(0, bthread_join(t, nullptr));
    tids.clear();
  }

  ~Blockers() {
    release();
    weft::butex_destroy(gate);
  }
};

struct MassResult {
  int wanted = 0;
  int started = 0;
  int first_error = 0;
  int maps = 0;
  long vm_size_kib = 0;
  long vm_rss_kib = 0;
  long rss_growth_kib = 0;  // while they were alive, over before they started
};

MassResult start_mass(const bthread_attr_t* attr, int n) {
  MassResult r;
  r.wanted = n;
  const long rss_before = status_kib("VmRSS");
  Blockers blockers;
  blockers.tids.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int rc = blockers.start(attr);
    if (rc != 0) {
      r.first_error = rc;
      break;
    }
  }
  EXPECT_TRUE(blockers.all_started());
  // All alive at once: none can end before the gate opens.
  r.started = blockers.started.load();
  r.maps = count_maps();
  r.vm_size_kib = status_kib("VmSize");
  r.vm_rss_kib = status_kib("VmRSS");
  r.rss_growth_kib = r.vm_rss_kib - rss_before;
  blockers.release();
  return r;
}

// How many fibers the mass tests start: 100,000 where guards do not split
// mappings; in mprotect mode each stack costs two mappings, so stay well
// under the default map count there.
int mass_count() {
  const int n = 100000 / kScale;
  if (std::string(weft::sched::stack_guard_mode()) == "madvise") return n;
  return std::min(n, 20000);
}

TEST(StackTest, GuardsUseMadviseOnNewKernels) {
  const std::string mode = weft::sched::stack_guard_mode();
  EXPECT_TRUE(mode == "madvise" || mode == "mprotect") << mode;
  if (kernel_at_least(6, 13)) {
    EXPECT_EQ("madvise", mode) << "MADV_GUARD_INSTALL exists from Linux 6.13";
  }
}

TEST(StackTest, HundredThousandSmallFibersAliveAtOnce) {
  const int n = mass_count();
  const MassResult r = start_mass(&BTHREAD_ATTR_SMALL, n);
  EXPECT_EQ(0, r.first_error) << "bthread_start_background failed after " << r.started;
  EXPECT_EQ(n, r.started);
  std::printf("%d small fibers: %d mappings, VmSize %ld MiB, VmRSS %ld MiB\n", r.started, r.maps,
              r.vm_size_kib / 1024, r.vm_rss_kib / 1024);
  EXPECT_LT(r.maps, kDefaultMaxMapCount);
  if (std::string(weft::sched::stack_guard_mode()) == "madvise") {
    // One mapping per slab of stacks, not two per stack.
    EXPECT_LT(r.maps, kDefaultMaxMapCount / 4);
  }
}

TEST(StackTest, HundredThousandNormalFibersReserveWithoutCommitting) {
  const int n = mass_count();
  const MassResult r = start_mass(&BTHREAD_ATTR_NORMAL, n);
  EXPECT_EQ(0, r.first_error) << "bthread_start_background failed after " << r.started;
  EXPECT_EQ(n, r.started);
  std::printf("%d normal fibers: %d mappings, VmSize %ld MiB, VmRSS %ld MiB (+%ld MiB)\n",
              r.started, r.maps, r.vm_size_kib / 1024, r.vm_rss_kib / 1024,
              r.rss_growth_kib / 1024);
  EXPECT_LT(r.maps, kDefaultMaxMapCount);
  if (std::string(weft::sched::stack_guard_mode()) == "madvise") {
    EXPECT_LT(r.maps, kDefaultMaxMapCount / 4);
  }
  // n MiB-sized stacks are reserved (address space), but only the pages the
  // fibers touched became resident.
  const long stacks_kib =
      static_cast<long>(weft::sched::stack_usable_size(weft::sched::kStackNormal) / 1024) *
      r.started;
  EXPECT_GE(r.vm_size_kib, stacks_kib);
#if !defined(WEFT_ASAN) && !defined(WEFT_TSAN)
  // (Sanitizers keep about as much state per fiber as a stack holds.)
  EXPECT_LT(r.rss_growth_kib, stacks_kib / 32)
      << "RSS grew by " << r.rss_growth_kib / 1024 << " MiB for " << stacks_kib / 1024
      << " MiB of stacks";
#endif
}

// ---- limits ----

// Puts --weft_max_fibers back however the test ends.
struct MaxFibersRestorer {
  int64_t saved = FLAGS_weft_max_fibers;
  ~MaxFibersRestorer() { FLAGS_weft_max_fibers = saved; }
};

TEST(StackTest, MaxFibersFlagGivesEagainAtOnce) {
  MaxFibersRestorer restorer;
  const int64_t saved = restorer.saved;
  // No public call counts the fibers alive; find the count by raising the
  // limit until one more fiber fits: that limit is "alive + 1".
  Blockers blockers;
  int64_t limit = 1;
  int rc = EAGAIN;
  for (; limit < 1000000; ++limit) {
    FLAGS_weft_max_fibers = limit;
    rc = blockers.start(&BTHREAD_ATTR_SMALL);
    if (rc != EAGAIN) break;
  }
  ASSERT_EQ(0, rc);
  const int extra = 7;
  FLAGS_weft_max_fibers = limit + extra;
  for (int i = 0; i < extra; ++i) ASSERT_EQ(0, blockers.start(&BTHREAD_ATTR_SMALL)) << i;
  ASSERT_TRUE(blockers.all_started());
  // At the limit: every way to start a fiber answers EAGAIN, without
  // waiting for one to end. Run them on a pthread so a blocking call shows
  // up as a failure rather than a hang.
  std::atomic<int> answered{0};
  int answers[4] = {-1, -1, -1, -1};
  auto ret = [](void*) -> void* { return nullptr; };
  std::thread starter([&] {
    bthread_t t;
    answers[0] = bthread_start_background(&t, &BTHREAD_ATTR_SMALL, ret, nullptr);
    answers[1] = bthread_start_background(&t, &BTHREAD_ATTR_LARGE, ret, nullptr);
    answers[2] = bthread_start_urgent(&t, nullptr, ret, nullptr);
    answers[3] = bthread_start_background(&t, &BTHREAD_ATTR_PTHREAD, ret, nullptr);
    answered.store(1);
  });
  const auto start = std::chrono::steady_clock::now();
  const bool done = wait_until([&] { return answered.load() == 1; }, milliseconds(10000));
  const auto took = std::chrono::steady_clock::now() - start;
  if (!done) {
    // Unblock it (a fiber ending makes room) before failing.
    FLAGS_weft_max_fibers = saved;
    blockers.release();
    starter.join();
    FAIL() << "bthread_start_* blocked at the fiber limit";
  }
  starter.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(EAGAIN, answers[i]) << "start call " << i;
  EXPECT_LT(took, milliseconds(1000));
  // Room again once one ends.
  FLAGS_weft_max_fibers = limit + extra;
  blockers.release();
  bthread_t t;
  EXPECT_EQ(0, bthread_start_background(&t, &BTHREAD_ATTR_SMALL, ret, nullptr));
  EXPECT_EQ(0, bthread_join(t, nullptr));
  FLAGS_weft_max_fibers = saved;
}

// Runs in a death-test child: lower RLIMIT_AS and start LARGE fibers until
// a start fails. Exits 0 when that failure is ENOMEM.
[[maybe_unused]] void run_out_of_address_space() {
  alarm(60);  // a hang fails the test instead of stalling it
  // Start the runtime and warm its pools before the limit.
  Blockers* warm = new Blockers;  // never released: the child just exits
  for (int i = 0; i < 4; ++i) {
    if (warm->start(&BTHREAD_ATTR_LARGE) != 0) _exit(10);
  }
  if (!warm->all_started()) _exit(11);
  const long vm_kib = status_kib("VmSize");
  if (vm_kib <= 0) _exit(12);
  rlimit lim;
  if (getrlimit(RLIMIT_AS, &lim) != 0) _exit(13);
  lim.rlim_cur = static_cast<rlim_t>(vm_kib + 512 * 1024) * 1024;  // 512 MiB more
  Blockers* blockers = new Blockers;
  blockers->tids.reserve(100000);
  if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(14);
  int rc = 0;
  int started = 0;
  for (; started < 100000; ++started) {
    rc = blockers->start(&BTHREAD_ATTR_LARGE);
    if (rc != 0) break;
  }
  std::fprintf(stderr, "started %d LARGE fibers under RLIMIT_AS, then: %s\n", started,
               rc == 0 ? "no failure" : strerror(rc));
  if (!blockers->all_started()) _exit(15);
  _exit(rc == ENOMEM ? 0 : (rc == 0 ? 16 : 17));
}

TEST(StackDeathTest, RunningOutOfMemoryGivesEnomemNotACrashOrHang) {
#if defined(WEFT_ASAN)
  GTEST_SKIP() << "AddressSanitizer reserves terabytes of shadow memory, so RLIMIT_AS cannot "
                  "bound the process";
#else
  EXPECT_EXIT(run_out_of_address_space(), testing::ExitedWithCode(0), "");
#endif
}

// ---- stack overflow ----

volatile int g_never = -1;

// A recursion the compiler can neither flatten into a loop nor shrink: every
// frame has a volatile array, written all through, and uses the callee's
// result after the call.
WEFT_NOINLINE int recurse(int depth) {
  volatile char frame[512];
  for (size_t i = 0; i < sizeof(frame); ++i) frame[i] = static_cast<char>(depth + i);
  if (depth == g_never) return frame[0];
  return recurse(depth + 1) + frame[depth % sizeof(frame)];
}

void* overflow(void*) { return reinterpret_cast<void*>(static_cast<intptr_t>(recurse(0))); }

void overflow_a_small_fiber() {
  bthread_t tid;
  if (bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, overflow, nullptr) != 0) _exit(3);
  bthread_join(tid, nullptr);
  _exit(4);  // survived: the death test fails on the exit code and message
}

TEST(StackDeathTest, OverflowingASmallStackDiesWithAClearMessage) {
  EXPECT_DEATH(overflow_a_small_fiber(), "fiber stack overflow");
}

// ---- guards against large frames ----

volatile char g_sink = 0;

// Writes the lowest byte of a frame (the one nearest the stack pointer).
WEFT_NOINLINE void touch_lowest(volatile char* frame) { frame[0] = 1; }

// One frame of `kBytes`, touched only at its two ends: without probing,
// the stack pointer moves by kBytes at once and the first write lands
// kBytes below the caller.
template <size_t kBytes>
WEFT_NOINLINE void big_frame() {
  volatile char frame[kBytes];
  touch_lowest(frame);
  frame[kBytes - 1] = 2;
  g_sink = frame[kBytes - 1];
}

// Recurses in small frames until fewer than `left` bytes of the fiber's
// stack remain, then calls `leaf`.
WEFT_NOINLINE void descend(const char* bottom, size_t left, void (*leaf)()) {
  volatile char pad[128];
  pad[0] = 0;
  if (static_cast<size_t>(const_cast<char*>(&pad[0]) - bottom) > left) {
    descend(bottom, left, leaf);
  } else {
    leaf();
  }
  g_sink = pad[0];
}

template <size_t kBytes>
void* overflow_by_one_frame(void*) {
  const char* bottom = static_cast<const char*>(weft::sched::current_fiber()->stack.bottom);
  descend(bottom, 1024, &big_frame<kBytes>);
  return nullptr;
}

// In a death-test child. The first fiber's stack is the lower neighbour of
// the second's (a slab hands out stacks in address order), so without a
// guard as large as the frame, the second fiber's frame lands in the first
// fiber's stack and nothing faults.
template <size_t kBytes>
void overflow_into_the_neighbour() {
  Blockers* neighbour = new Blockers;  // never released: the child exits
  if (neighbour->start(&BTHREAD_ATTR_SMALL) != 0 || !neighbour->all_started()) _exit(3);
  bthread_t tid;
  if (bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, overflow_by_one_frame<kBytes>, nullptr) !=
      0) {
    _exit(3);
  }
  bthread_join(tid, nullptr);
  std::fprintf(stderr, "a %zu KiB frame ran past the stack without faulting\n", kBytes / 1024);
  _exit(4);
}

TEST(StackDeathTest, AnEightKibFrameOverflowHitsTheGuardNotTheNeighbour) {
  EXPECT_DEATH(overflow_into_the_neighbour<8 * 1024>(), "fiber stack overflow");
}

TEST(StackDeathTest, ASixtyKibFrameOverflowHitsTheGuardNotTheNeighbour) {
  EXPECT_DEATH(overflow_into_the_neighbour<60 * 1024>(), "fiber stack overflow");
}

TEST(StackTest, GuardHitRecognisesTheWholeGuardBelowAStack) {
  struct Probe {
    void* bottom = nullptr;
    std::atomic<int> done{0};
  } probe;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, [](void* a) -> void* {
    static_cast<Probe*>(a)->bottom = weft::sched::current_fiber()->stack.bottom;
    return nullptr;
  }, &probe));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  const char* bottom = static_cast<const char*>(probe.bottom);
  size_t size = 0;
  EXPECT_TRUE(weft::sched::stack_guard_hit(bottom - 1, &size));
  EXPECT_EQ(weft::sched::stack_usable_size(weft::sched::kStackSmall), size);
  EXPECT_TRUE(weft::sched::stack_guard_hit(bottom - 64 * 1024, &size));
  EXPECT_FALSE(weft::sched::stack_guard_hit(bottom, &size));
}

}  // namespace
