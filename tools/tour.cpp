#include <weft/bthread.h>
#include <cstdio>
static void* hello(void* arg) { return arg; }
int main() {
  bthread_t t;
  int x = 42;
  bthread_start_background(&t, nullptr, hello, &x);
  void* r = nullptr;
  bthread_join(t, &r);
  std::printf("fiber returned %d\n", *static_cast<int*>(r));
}
