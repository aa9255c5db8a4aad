// weft/rpc/closure.h: Closure, the `done` of a call.
//
// A Closure is a move-only callable run exactly once, from any fiber or
// pthread. It is not std::function<void()> because std::function must be
// copyable, so it cannot own what a reply needs (the request message, which
// holds the connection, and the Controller are unique owners); a copy would
// also invite calling `done` twice. Calling it runs the callable and frees
// it; the Closure is empty afterwards.
#ifndef WEFT_RPC_CLOSURE_H_
#define WEFT_RPC_CLOSURE_H_

#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>

namespace weft::rpc {

class Closure {
 public:
  Closure() = default;
  // Empty, as Closure(): rpc.md writes a synchronous call's done as nullptr.
  Closure(std::nullptr_t) noexcept {}  // NOLINT: implicit on purpose
  // Takes any callable `void()`, copyable or not (e.g. a lambda that owns a
  // std::unique_ptr).
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Closure> &&
                                                    !std::is_same_v<std::decay_t<F>, std::nullptr_t>>>
  Closure(F&& f)  // NOLINT: implicit, so a lambda can be passed directly
      : impl_(new Impl<std::decay_t<F>>(std::forward<F>(f))) {}
  Closure(Closure&&) noexcept = default;
  Closure& operator=(Closure&&) noexcept = default;
  Closure(const Closure&) = delete;
  Closure& operator=(const Closure&) = delete;
  ~Closure() = default;

  explicit operator bool() const { return impl_ != nullptr; }

  // Runs the callable once and frees it (before returning). Any fiber or
  // pthread; suspends only if the callable does. Calling an empty Closure
  // (never set, moved from, or already run) is a bug: it aborts, since a
  // second reply to one call would corrupt the caller's state.
  void operator()();

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void Run() = 0;
  };
  template <typename F>
  struct Impl final : Base {
    explicit Impl(F&& f) : f_(std::move(f)) {}
    explicit Impl(const F& f) : f_(f) {}
    void Run() override { f_(); }
    F f_;
  };
  std::unique_ptr<Base> impl_;
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_CLOSURE_H_
