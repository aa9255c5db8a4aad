// IOBuf: contents across block boundaries, sharing and reference merging,
// the inline reference ring under copy/move/swap, readv/writev round trips
// on pipes and socketpairs (partial writes, EOF, iovec limits), out of
// memory rollback, thread exit, and a cross-thread stress run.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/net/iobuf.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "../runtime/test_util.h"
#include "iobuf_test_util.h"

namespace {

using weft::IOBuf;
using weft::IOBUF_IOV_MAX;
using weft::test::kScale;
using weft::test::pattern;

// Invariants every IOBuf keeps: refs are non-empty and sum to size().
void expect_consistent(const IOBuf& b) {
  size_t sum = 0;
  for (size_t i = 0; i < b.backing_block_num(); ++i) {
    EXPECT_GT(b.backing_block(i).size(), 0u) << "ref " << i;
    sum += b.backing_block(i).size();
  }
  EXPECT_EQ(b.size(), sum);
}

// Payload bytes of one block, observed: a fresh block filled from offset 0.
size_t block_payload() {
  IOBuf::release_thread_cache();
  IOBuf b;
  b.append(pattern(3 * IOBuf::DEFAULT_BLOCK_SIZE));
  return b.backing_block(0).size();
}

struct Fds {
  int fds[2] = {-1, -1};
  ~Fds() {
    for (int fd : fds) close(fd);  // EBADF for -1 is harmless
  }
  int r() const { return fds[0]; }
  int w() const { return fds[1]; }
};

void make_pipe(Fds* p) { ASSERT_EQ(0, pipe2(p->fds, O_NONBLOCK)); }
// Non-blocking, with a small send buffer so that writes go partial early.
void make_socketpair(Fds* p) {
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds));
  const int sndbuf = 32 * 1024;
  ASSERT_EQ(0, setsockopt(p->w(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)));
}

std::vector<IOBuf*> pointers(std::vector<IOBuf>& v) {
  std::vector<IOBuf*> out;
  for (IOBuf& b : v) out.push_back(&b);
  return out;
}

std::string concat(const std::vector<IOBuf>& v) {
  std::string out;
  for (const IOBuf& b : v) out += b.to_string();
  return out;
}

// Reads everything currently readable from a non-blocking fd.
std::string drain(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(IOBufTest, EmptyBuffer) {
  IOBuf b;
  EXPECT_TRUE(b.empty() && b.size() == 0 && b.backing_block_num() == 0);
  EXPECT_TRUE(b.equals("") && b.to_string().empty());
  char c = 'z';
  EXPECT_FALSE(b.cut1(&c));
  EXPECT_EQ(0u, b.pop_front(10));
  EXPECT_EQ(0u, b.pop_back(10));
  EXPECT_EQ(0u, b.copy_to(&c, 1));
  char aux[4];
  EXPECT_EQ(nullptr, b.fetch(aux, 1));
  EXPECT_EQ(0, b.append(nullptr, 0));
  Fds p;
  make_pipe(&p);
  EXPECT_EQ(0, b.cut_into_file_descriptor(p.w()));
}

TEST(IOBufTest, SmallAppendsAndAccessors) {
  IOBuf b;
  ASSERT_EQ(0, b.append("hello", 5));
  ASSERT_EQ(0, b.push_back(' '));
  ASSERT_EQ(0, b.append(std::string_view("world")));
  EXPECT_TRUE(b.size() == 11 && b.length() == 11);
  EXPECT_EQ("hello world", b.to_string());
  EXPECT_TRUE(b.equals("hello world"));
  EXPECT_FALSE(b.equals("hello worle"));
  EXPECT_FALSE(b.equals("hello worl"));
  EXPECT_EQ('w', b.byte_at(6));
  EXPECT_EQ('d', b.byte_at(10));
  // Three appends on one thread in a row extend one reference.
  EXPECT_EQ(1u, b.backing_block_num());
  EXPECT_EQ("hello world", b.backing_block(0));
  EXPECT_TRUE(b.backing_block(1).empty());
}

TEST(IOBufTest, LargeAppendsSpanBlocks) {
  const size_t cap = block_payload();
  EXPECT_GT(cap, IOBuf::DEFAULT_BLOCK_SIZE - 128);
  EXPECT_LT(cap, IOBuf::DEFAULT_BLOCK_SIZE);
  for (size_t n : {size_t{20000}, cap - 1, cap, cap + 1, 2 * cap + 7, size_t{100003}}) {
    IOBuf::release_thread_cache();  // start in a fresh block: exact ref counts
    IOBuf b;
    const std::string s = pattern(n, static_cast<uint32_t>(n));
    ASSERT_EQ(0, b.append(s));
    EXPECT_EQ(s, b.to_string());
    EXPECT_EQ((n + cap - 1) / cap, b.backing_block_num()) << n;
    for (size_t i = 0; i < b.backing_block_num(); ++i) {
      EXPECT_LE(b.backing_block(i).size(), cap);
      EXPECT_EQ(s.substr(i * cap, cap), b.backing_block(i));
    }
    expect_consistent(b);
  }
}

TEST(IOBufTest, SmallAppendsMergeIntoFewRefs) {
  IOBuf::release_thread_cache();
  IOBuf b;
  const std::string msg = pattern(16);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(0, b.append(msg));
  EXPECT_EQ(16000u, b.size());
  // 16000 bytes in fresh blocks: one ref per block.
  EXPECT_EQ(2u, b.backing_block_num());
  std::string model;
  for (int i = 0; i < 1000; ++i) model += msg;
  EXPECT_TRUE(b.equals(model));
}

TEST(IOBufTest, CopiesShareBlocksAndStayIndependent) {
  IOBuf::release_thread_cache();
  const int64_t base = IOBuf::block_count();
  const std::string s = pattern(20000, 3);
  {
    IOBuf a;
    ASSERT_EQ(0, a.append(s));
    const int64_t with_a = IOBuf::block_count();
    EXPECT_EQ(base + 3, with_a);
    IOBuf b(a), c;
    c = a;
    EXPECT_EQ(with_a, IOBuf::block_count());  // no payload copied
    ASSERT_EQ(a.backing_block_num(), b.backing_block_num());
    for (size_t i = 0; i < a.backing_block_num(); ++i) {
      EXPECT_EQ(a.backing_block(i).data(), b.backing_block(i).data());
      EXPECT_EQ(a.backing_block(i).data(), c.backing_block(i).data());
    }
    EXPECT_EQ(100u, b.pop_front(100));
    EXPECT_EQ(7u, c.pop_back(7));
    // Appending to one never shows in another, even though the tail of the
    // shared last block is the thread's current block.
    ASSERT_EQ(0, a.append("tail", 4));
    ASSERT_EQ(0, c.append("C", 1));
    EXPECT_TRUE(a.equals(s + "tail"));
    EXPECT_TRUE(b.equals(s.substr(100)));
    EXPECT_TRUE(c.equals(s.substr(0, s.size() - 7) + "C"));
  }
  IOBuf::release_thread_cache();
  EXPECT_EQ(base, IOBuf::block_count());
}

// Appends each of `chars` as its own ref: a spacer takes a byte of the
// thread's block between them, so no ref extends the one before it.
void AppendRefPerByte(IOBuf* buf, std::string_view chars) {
  IOBuf spacer;
  for (char ch : chars) {
    ASSERT_EQ(0, buf->push_back(ch));
    ASSERT_EQ(0, spacer.push_back('-'));
  }
}

// "23" in two inline refs, the ring's start at 1 (wrapped): the first of
// three popped.
void MakeWrappedInlineRing(IOBuf* buf) {
  AppendRefPerByte(buf, "12");
  buf->pop_front(1);
  ASSERT_EQ(0, buf->append("3", 1));
  ASSERT_EQ(2u, buf->backing_block_num());
}

TEST(IOBufTest, MoveAndSwapWithInlineRefs) {
  // One ref: the ring is inline. A moved-to buffer must not point into the
  // source's inline array: appending to the source must not change it.
  auto* a = new IOBuf;
  ASSERT_EQ(0, a->append("xy", 2));
  IOBuf b(std::move(*a));
  EXPECT_TRUE(a->empty());
  ASSERT_EQ(0, a->append(pattern(40000)));
  EXPECT_TRUE(b.equals("xy"));
  delete a;  // ASan: b may not refer to the freed source
  EXPECT_TRUE(b.equals("xy"));

  IOBuf c;
  MakeWrappedInlineRing(&c);
  EXPECT_TRUE(c.equals("23"));
  IOBuf d;
  d = std::move(c);
  EXPECT_TRUE(d.equals("23"));
  EXPECT_TRUE(c.empty());
  ASSERT_EQ(0, c.append("zz", 2));
  EXPECT_TRUE(d.equals("23"));
  d.swap(b);  // inline with inline
  EXPECT_TRUE(d.equals("xy"));
  EXPECT_TRUE(b.equals("23"));
  ASSERT_EQ(0, b.append("4", 1));
  ASSERT_EQ(0, d.append("!", 1));
  EXPECT_TRUE(d.equals("xy!"));
  EXPECT_TRUE(b.equals("234"));
  IOBuf& alias = d;
  d = alias;  // self-assignment keeps the contents
  d = std::move(alias);
  EXPECT_TRUE(d.equals("xy!"));

  // Move construction from a wrapped inline ring (rebased into the new
  // object's own array) and from a ring on the heap (taken as it is).
  IOBuf wrapped;
  MakeWrappedInlineRing(&wrapped);
  IOBuf from_inline(std::move(wrapped));
  EXPECT_TRUE(wrapped.empty());
  EXPECT_EQ(0u, wrapped.backing_block_num());
  ASSERT_EQ(0, wrapped.append("w", 1));
  ASSERT_EQ(0, from_inline.append("4", 1));
  EXPECT_TRUE(from_inline.equals("234"));
  EXPECT_TRUE(wrapped.equals("w"));
  IOBuf many;
  AppendRefPerByte(&many, "abcde");
  ASSERT_EQ(5u, many.backing_block_num());
  IOBuf from_heap(std::move(many));
  EXPECT_TRUE(many.empty());
  EXPECT_TRUE(from_heap.equals("abcde"));
  ASSERT_EQ(0, many.append("m", 1));
  ASSERT_EQ(0, from_heap.append("f", 1));
  EXPECT_TRUE(from_heap.equals("abcdef"));
  EXPECT_TRUE(many.equals("m"));
}

TEST(IOBufTest, AppendIOBufSharesOrMoves) {
  const std::string s1 = pattern(9000, 1), s2 = pattern(300, 2);
  IOBuf a, b;
  ASSERT_EQ(0, a.append(s1));
  ASSERT_EQ(0, b.append(s2));
  const int64_t blocks = IOBuf::block_count();
  a.append(b);
  EXPECT_EQ(blocks, IOBuf::block_count());
  EXPECT_TRUE(a.equals(s1 + s2));
  EXPECT_TRUE(b.equals(s2));
  a.append(std::move(b));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(0u, b.backing_block_num());
  EXPECT_TRUE(a.equals(s1 + s2 + s2));
  IOBuf empty;
  empty.append(std::move(a));  // into an empty buffer: takes the ring
  EXPECT_TRUE(a.empty());
  EXPECT_TRUE(empty.equals(s1 + s2 + s2));
  empty.append(empty);  // self append doubles
  EXPECT_TRUE(empty.equals(s1 + s2 + s2 + s1 + s2 + s2));
  expect_consistent(empty);
}

TEST(IOBufTest, CutnVariants) {
  const std::string s = pattern(25000, 6);
  IOBuf b;
  ASSERT_EQ(0, b.append(s));
  IOBuf out;
  ASSERT_EQ(0, out.append("pre", 3));
  const int64_t blocks = IOBuf::block_count();
  EXPECT_EQ(10000u, b.cutn(&out, 10000));
  EXPECT_EQ(blocks, IOBuf::block_count());  // shared, not copied
  EXPECT_TRUE(out.equals("pre" + s.substr(0, 10000)));
  std::string str = "x";
  EXPECT_EQ(9000u, b.cutn(&str, 9000));
  EXPECT_EQ("x" + s.substr(10000, 9000), str);
  std::vector<char> raw(8000);
  EXPECT_EQ(5000u, b.cutn(raw.data(), 5000));
  EXPECT_EQ(s.substr(19000, 5000), std::string(raw.data(), 5000));
  EXPECT_EQ(1000u, b.cutn(raw.data(), 8000));  // only 1000 left
  EXPECT_EQ(s.substr(24000), std::string(raw.data(), 1000));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(0u, b.cutn(&out, 1));
  ASSERT_EQ(0, b.append(s.data(), 9000));
  std::string bytes;
  char c;
  while (b.cut1(&c)) bytes.push_back(c);
  EXPECT_EQ(s.substr(0, 9000), bytes);
  // Cutting into itself rotates.
  IOBuf r;
  ASSERT_EQ(0, r.append("abcdef", 6));
  EXPECT_EQ(2u, r.cutn(&r, 2));
  EXPECT_TRUE(r.equals("cdefab"));
  expect_consistent(out);
}

TEST(IOBufTest, CopyToAndFetch) {
  const std::string s = pattern(20000, 8);
  IOBuf b;
  IOBuf::release_thread_cache();
  ASSERT_EQ(0, b.append(s));
  std::vector<char> buf(20000);
  EXPECT_EQ(20000u, b.copy_to(buf.data()));
  EXPECT_EQ(s, std::string(buf.data(), 20000));
  EXPECT_EQ(300u, b.copy_to(buf.data(), 300, 8100));  // straddles a block end
  EXPECT_EQ(s.substr(8100, 300), std::string(buf.data(), 300));
  EXPECT_EQ(100u, b.copy_to(buf.data(), 500, 19900));
  EXPECT_EQ(0u, b.copy_to(buf.data(), 5, 20000));
  std::string str = "old";
  EXPECT_EQ(50u, b.copy_to(&str, 50, 10));
  EXPECT_EQ(s.substr(10, 50), str);  // replaced, not appended
  EXPECT_TRUE(b.equals(s));          // nothing removed

  char aux[10000];
  const void* p = b.fetch(aux, 100);
  EXPECT_EQ(static_cast<const void*>(b.backing_block(0).data()), p);  // no copy
  EXPECT_EQ(0, memcmp(p, s.data(), 100));
  p = b.fetch(aux, 9000);  // past the first block: copied
  EXPECT_EQ(static_cast<const void*>(aux), p);
  EXPECT_EQ(0, memcmp(aux, s.data(), 9000));
  EXPECT_EQ(nullptr, b.fetch(aux, 20001));
}

TEST(IOBufTest, RandomOperationsMatchAStringModel) {
  std::mt19937 rng(42);
  auto rnd = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto rand_len = [&]() -> size_t {
    switch (rnd(3)) {
      case 0:
        return rnd(16) + 1;
      case 1:
        return rnd(600) + 1;
      default:
        return rnd(20000) + 1;
    }
  };
  IOBuf a, b;
  std::string ma, mb;
  std::vector<char> tmp;
  const int iters = 20000 / kScale;
  for (int it = 0; it < iters; ++it) {
    switch (rnd(13)) {
      case 0: {
        const std::string s = pattern(rand_len(), static_cast<uint32_t>(it));
        ASSERT_EQ(0, a.append(s));
        ma += s;
        break;
      }
      case 1: {
        const std::string s = pattern(rnd(40) + 1, static_cast<uint32_t>(it));
        ASSERT_EQ(0, b.append(s));
        mb += s;
        break;
      }
      case 2:
        ma.erase(0, a.pop_front(rand_len()));
        break;
      case 3: {
        const size_t k = a.pop_back(rand_len());
        ma.resize(ma.size() - k);
        break;
      }
      case 4: {
        const size_t k = a.cutn(&b, rand_len());
        mb += ma.substr(0, k);
        ma.erase(0, k);
        break;
      }
      case 5: {
        tmp.resize(rand_len());
        const size_t k = a.cutn(tmp.data(), tmp.size());
        ASSERT_EQ(ma.substr(0, k), std::string(tmp.data(), k));
        ma.erase(0, k);
        break;
      }
      case 6:
        a.append(b);
        ma += mb;
        break;
      case 7:
        a.append(std::move(b));
        ma += mb;
        mb.clear();
        break;
      case 8: {
        const size_t pos = rnd(ma.size() + 1), n = rand_len();
        tmp.resize(n);
        const size_t k = a.copy_to(tmp.data(), n, pos);
        ASSERT_EQ(pos < ma.size() ? std::min(n, ma.size() - pos) : 0u, k);
        ASSERT_EQ(ma.substr(std::min(pos, ma.size()), k), std::string(tmp.data(), k));
        if (!ma.empty()) {
          ASSERT_EQ(ma[pos % ma.size()], a.byte_at(pos % ma.size()));
        }
        break;
      }
      case 9:
        b = a;
        mb = ma;
        break;
      case 10:
        a.swap(b);
        ma.swap(mb);
        break;
      case 11: {  // rotate through moves: inline and heap rings both ways
        IOBuf t(std::move(a));
        ASSERT_TRUE(a.empty());
        a = std::move(b);
        b = std::move(t);
        ma.swap(mb);
        break;
      }
      default: {
        tmp.resize(20000);
        const size_t n = rand_len();
        const void* p = a.fetch(tmp.data(), n);
        if (n > ma.size()) {
          ASSERT_EQ(nullptr, p);
        } else {
          ASSERT_EQ(0, memcmp(p, ma.data(), n));
        }
      }
    }
    if (ma.size() > 300000) ma.erase(0, a.pop_front(200000));
    if (mb.size() > 300000) mb.erase(0, b.pop_front(200000));
    ASSERT_TRUE(a.equals(ma)) << it;
    ASSERT_TRUE(b.equals(mb)) << it;
    if (it % 64 == 0) {
      expect_consistent(a);
      expect_consistent(b);
    }
  }
}

TEST(IOBufTest, PipeReadWriteEagainAndEof) {
  Fds p;
  make_pipe(&p);
  IOBuf in;
  errno = 0;
  EXPECT_EQ(-1, in.append_from_file_descriptor(p.r(), 4096));
  EXPECT_EQ(EAGAIN, errno);
  const std::string s = pattern(60000, 9);
  IOBuf out;
  ASSERT_EQ(0, out.append(s.data(), 50000));
  ASSERT_EQ(50000, out.cut_into_file_descriptor(p.w()));
  EXPECT_TRUE(out.empty());
  ssize_t n;
  while ((n = in.append_from_file_descriptor(p.r(), 7777)) > 0) EXPECT_LE(n, 7777);
  EXPECT_EQ(-1, n);
  EXPECT_EQ(EAGAIN, errno);
  EXPECT_TRUE(in.equals(s.substr(0, 50000)));
  expect_consistent(in);
  in.clear();
  // One read into many fresh blocks.
  ASSERT_EQ(60000, write(p.w(), s.data(), 60000));
  EXPECT_EQ(60000, in.append_from_file_descriptor(p.r(), 1 << 22));
  EXPECT_TRUE(in.equals(s));
  close(p.fds[1]);
  p.fds[1] = -1;
  EXPECT_EQ(0, in.append_from_file_descriptor(p.r(), 4096));
  EXPECT_EQ(60000u, in.size());
}

TEST(IOBufTest, ReadsContinueInTheCurrentBlock) {
  Fds p;
  make_pipe(&p);
  IOBuf::release_thread_cache();
  IOBuf in;
  const std::string s = pattern(300, 10);
  ASSERT_EQ(100, write(p.w(), s.data(), 100));
  ASSERT_EQ(100, in.append_from_file_descriptor(p.r(), 1000));
  ASSERT_EQ(200, write(p.w(), s.data() + 100, 200));
  ASSERT_EQ(200, in.append_from_file_descriptor(p.r(), 1000));
  ASSERT_EQ(0, in.append("!", 1));
  // Both reads and the append are consecutive bytes of one block.
  EXPECT_EQ(1u, in.backing_block_num());
  EXPECT_TRUE(in.equals(s + "!"));
}

TEST(IOBufTest, PartlyFilledFreshBlockBecomesCurrent) {
  const size_t cap = block_payload();
  IOBuf::release_thread_cache();
  IOBuf filler;
  ASSERT_EQ(0, filler.append(pattern(cap - 50)));  // current block: 50 bytes of room
  Fds p;
  make_pipe(&p);
  const std::string s = pattern(10000, 11);
  ASSERT_EQ(10000, write(p.w(), s.data(), s.size()));
  IOBuf in;
  ASSERT_EQ(10000, in.append_from_file_descriptor(p.r(), 20000));
  EXPECT_TRUE(in.equals(s));
  // 50 bytes in the old block's tail, cap in a fresh one, the rest in a
  // second fresh one which has more room and so becomes the current block.
  ASSERT_EQ(3u, in.backing_block_num());
  EXPECT_EQ(50u, in.backing_block(0).size());
  EXPECT_EQ(cap, in.backing_block(1).size());
  ASSERT_EQ(0, in.append("x", 1));
  EXPECT_EQ(3u, in.backing_block_num());  // merged into the last ref
  EXPECT_TRUE(in.equals(s + "x"));
}

TEST(IOBufTest, SocketpairRoundTripWithPartialWrites) {
  Fds sp;
  make_socketpair(&sp);
  const std::string s = pattern((8u << 20) / static_cast<unsigned>(kScale) + 300000, 13);
  IOBuf out, in;
  // Odd pieces so refs and block ends do not line up.
  for (size_t off = 0; off < s.size(); off += 3001) {
    ASSERT_EQ(0, out.append(s.data() + off, std::min<size_t>(3001, s.size() - off)));
  }
  int eagains = 0;
  while (in.size() < s.size()) {
    while (!out.empty()) {
      const size_t before = out.size();
      const ssize_t nw = out.cut_into_file_descriptor(sp.w(), 200000);
      if (nw < 0) {
        ASSERT_EQ(EAGAIN, errno);
        ++eagains;
        break;
      }
      ASSERT_EQ(before - static_cast<size_t>(nw), out.size());
    }
    ssize_t nr;
    while ((nr = in.append_from_file_descriptor(sp.r(), 10007)) > 0) {
    }
    ASSERT_EQ(-1, nr);
    ASSERT_EQ(EAGAIN, errno);
  }
  EXPECT_GT(eagains, 0);  // the peer's buffer did fill up
  EXPECT_TRUE(in.equals(s));
}

TEST(IOBufTest, CutIntoFdStopsAtSizeHint) {
  const size_t cap = block_payload();
  IOBuf::release_thread_cache();
  IOBuf b;
  ASSERT_EQ(0, b.append(pattern(3 * cap)));
  Fds p;
  make_pipe(&p);
  // One iovec reaches the hint: exactly the first block goes.
  EXPECT_EQ(static_cast<ssize_t>(cap), b.cut_into_file_descriptor(p.w(), 1));
  EXPECT_EQ(static_cast<ssize_t>(2 * cap), b.cut_into_file_descriptor(p.w(), cap + 1));
  EXPECT_EQ(pattern(3 * cap), drain(p.r()));
}

TEST(IOBufTest, CutIntoFdUsesAtMostIovMaxIovecs) {
  IOBuf b, spacer;
  std::string model;
  for (int i = 0; i < 1000; ++i) {
    const char c = static_cast<char>('a' + i % 26);
    ASSERT_EQ(0, b.push_back(c));
    ASSERT_EQ(0, spacer.push_back('-'));
    model.push_back(c);
  }
  ASSERT_EQ(1000u, b.backing_block_num());
  Fds p;
  make_pipe(&p);
  EXPECT_EQ(static_cast<ssize_t>(IOBUF_IOV_MAX), b.cut_into_file_descriptor(p.w()));
  while (!b.empty()) ASSERT_GT(b.cut_into_file_descriptor(p.w()), 0);
  EXPECT_EQ(model, drain(p.r()));
}

TEST(IOBufTest, CutMultipleMergesAdjacentPieces) {
  IOBuf::release_thread_cache();
  std::vector<IOBuf> msgs(1000);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(0, msgs[i].append(pattern(16, i)));
  const std::string model = concat(msgs);
  std::vector<IOBuf*> ptrs = pointers(msgs);
  Fds p;
  make_pipe(&p);
  // 1000 pieces back to back in two blocks: two iovecs, one writev.
  EXPECT_EQ(16000, IOBuf::cut_multiple_into_file_descriptor(p.w(), ptrs.data(), ptrs.size()));
  EXPECT_EQ("", concat(msgs));
  EXPECT_EQ(model, drain(p.r()));
  EXPECT_EQ(0, IOBuf::cut_multiple_into_file_descriptor(p.w(), ptrs.data(), ptrs.size()));
}

TEST(IOBufTest, CutMultipleCapsIovecsKeepsOrderAndSkipsEmptyPieces) {
  std::vector<IOBuf> msgs(2000);
  IOBuf spacer;
  for (int i = 0; i < 2000; i += 2) {  // odd pieces stay empty
    ASSERT_EQ(0, msgs[i].append(pattern(16, i)));
    ASSERT_EQ(0, spacer.push_back('-'));  // keeps pieces apart in memory
  }
  const std::string model = concat(msgs);
  std::vector<IOBuf*> ptrs = pointers(msgs);
  Fds p;
  make_pipe(&p);
  EXPECT_EQ(32, IOBuf::cut_multiple_into_file_descriptor(p.w(), ptrs.data(), ptrs.size(), 20));
  EXPECT_TRUE(msgs[2].empty());
  EXPECT_EQ(16u, msgs[4].size());
  // Each ref needs its own iovec (a piece straddling a block end has two):
  // the call covers exactly the first IOBUF_IOV_MAX refs.
  size_t iovs = 0, expect = 0;
  for (IOBuf* m : ptrs) {
    for (size_t i = 0; i < m->backing_block_num() && iovs < IOBUF_IOV_MAX; ++i, ++iovs) {
      expect += m->backing_block(i).size();
    }
  }
  EXPECT_GE(expect, 16 * (IOBUF_IOV_MAX - 2));
  EXPECT_EQ(static_cast<ssize_t>(expect),
            IOBuf::cut_multiple_into_file_descriptor(p.w(), ptrs.data(), ptrs.size()));
  EXPECT_EQ(model.substr(32 + expect), concat(msgs));
  std::string got = drain(p.r());
  ssize_t n;
  while ((n = IOBuf::cut_multiple_into_file_descriptor(p.w(), ptrs.data(), ptrs.size())) > 0) {
    got += drain(p.r());
  }
  EXPECT_EQ(0, n);
  EXPECT_EQ(model, got);
}

TEST(IOBufTest, CutMultipleWithPartialWrites) {
  Fds sp;
  make_socketpair(&sp);
  std::vector<IOBuf> msgs(3000 / kScale + 10);
  for (size_t i = 0; i < msgs.size(); ++i) ASSERT_EQ(0, msgs[i].append(pattern(1000 + i % 97, i)));
  const std::string model = concat(msgs);
  std::vector<IOBuf*> ptrs = pointers(msgs);
  std::string got;
  int split_pieces = 0;  // calls that ended inside a piece
  while (got.size() < model.size()) {
    const ssize_t n = IOBuf::cut_multiple_into_file_descriptor(sp.w(), ptrs.data(), ptrs.size());
    if (n < 0) {
      ASSERT_EQ(EAGAIN, errno);
    }
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (!msgs[i].empty()) {
        split_pieces += msgs[i].size() != 1000 + i % 97;
        break;
      }
    }
    got += drain(sp.r());
    // The pieces hold exactly the unsent suffix, in order.
    ASSERT_EQ(model.substr(got.size()), concat(msgs));
  }
  EXPECT_EQ(model, got);
  EXPECT_GT(split_pieces, 0);  // the socket's buffer cut writes short
}

TEST(IOBufTest, FailedAppendLeavesNothingBehind) {
#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
  GTEST_SKIP() << "the sanitizers need far more address space than the limit allows";
#else
  // In a child process: cap the address space, append until malloc fails,
  // and check that the failing append rolled back. Exit codes tell which
  // check failed (gtest asserts may allocate).
  EXPECT_EXIT(
      {
        const size_t kChunk = 1 << 20;
        const std::string src = pattern(kChunk, 14);
        std::vector<char> check(kChunk);
        IOBuf b;
        if (b.append("head", 4) != 0) _exit(10);
        long pages = 0;  // the address space in use now
        FILE* f = fopen("/proc/self/statm", "r");
        if (f == nullptr || fscanf(f, "%ld", &pages) != 1) _exit(11);
        fclose(f);
        rlimit lim;
        lim.rlim_cur = lim.rlim_max =
            static_cast<rlim_t>(pages * sysconf(_SC_PAGESIZE) + (64 << 20));
        if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(12);
        size_t ok = 0;
        int rc;
        while ((rc = b.append(src)) == 0) {
          if (++ok > 1000) _exit(13);  // the limit did not bite
        }
        if (rc != -1 || errno != ENOMEM) _exit(14);
        if (b.size() != 4 + ok * kChunk) _exit(15);
        if (b.byte_at(0) != 'h' || b.byte_at(3) != 'd') _exit(16);
        if (ok == 0 || b.copy_to(check.data(), kChunk, b.size() - kChunk) != kChunk) _exit(17);
        if (memcmp(check.data(), src.data(), kChunk) != 0) _exit(18);
        b.pop_back(kChunk);  // frees room: appending works again
        if (b.append(src) != 0) _exit(19);
        if (b.size() != 4 + ok * kChunk) _exit(20);
        _exit(0);
      },
      testing::ExitedWithCode(0), "");
#endif
}

}  // namespace
