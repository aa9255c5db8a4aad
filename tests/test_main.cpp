// Shared main for weft's test programs: gflags first (so tests run with
// --weft_concurrency=N), then GoogleTest.
#include <gflags/gflags.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // Death tests fork; the threadsafe style re-executes the binary, which is
  // what a process with worker threads needs.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return RUN_ALL_TESTS();
}
