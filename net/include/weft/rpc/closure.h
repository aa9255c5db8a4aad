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
#include <new>
#include <type_traits>
#include <utility>

namespace weft::rpc {

class Closure {
 public:
  Closure() = default;
  // Empty, as Closure(): rpc.md writes a synchronous call's done as nullptr.
  Closure(std::nullptr_t) noexcept {}  // NOLINT: implicit on purpose
  // Takes any callable `void()`, copyable or not (e.g. a lambda that owns a
  // std::unique_ptr). One that fits kInlineBytes and moves without throwing
  // (a lambda holding a pointer or two) is stored in the Closure itself;
  // a bigger one on the heap. A protocol's done is made once per call, so
  // the inline case saves a malloc and a free on every request.
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Closure> &&
                                        !std::is_same_v<std::decay_t<F>, std::nullptr_t>>>
  Closure(F&& f) {  // NOLINT: implicit, so a lambda can be passed directly
    using T = std::decay_t<F>;
    if constexpr (kFitsInline<T>) {
      new (storage_) T(std::forward<F>(f));
      ops_ = &kInlineOps<T>;
    } else {
      *reinterpret_cast<T**>(storage_) = new T(std::forward<F>(f));
      ops_ = &kHeapOps<T>;
    }
  }
  Closure(Closure&& other) noexcept { TakeFrom(other); }
  // Both callables are settled before the old one is destroyed: its
  // destructor may free `other`, or this Closure's own holder (a callable
  // that keeps its owner alive), as with std::unique_ptr's assignment.
  Closure& operator=(Closure&& other) noexcept {
    if (this != &other) {
      Closure old(std::move(*this));
      TakeFrom(other);
    }  // old's callable is destroyed here; nothing touches *this after it
    return *this;
  }
  Closure(const Closure&) = delete;
  Closure& operator=(const Closure&) = delete;
  ~Closure() { Reset(); }

  explicit operator bool() const { return ops_ != nullptr; }

  // Runs the callable once and frees it (before returning). Any fiber or
  // pthread; suspends only if the callable does. Calling an empty Closure
  // (never set, moved from, or already run) is a bug: it aborts, since a
  // second reply to one call would corrupt the caller's state.
  void operator()();

 private:
  static constexpr size_t kInlineBytes = 4 * sizeof(void*);

  // What a stored callable needs, without a virtual base: `move` constructs
  // at `to` from `from` and ends `from`; `destroy` ends it unrun; `run`
  // calls it (the caller destroys it afterwards).
  struct Ops {
    void (*move)(void* from, void* to) noexcept;
    void (*destroy)(void* at) noexcept;
    void (*run)(void* at);
  };

  template <typename T>
  static constexpr bool kFitsInline =
      sizeof(T) <= kInlineBytes &&
      alignof(T) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<T>;

  template <typename T>
  static constexpr Ops kInlineOps = {
      [](void* from, void* to) noexcept {
        T* f = std::launder(static_cast<T*>(from));
        new (to) T(std::move(*f));
        f->~T();
      },
      [](void* at) noexcept { std::launder(static_cast<T*>(at))->~T(); },
      [](void* at) { (*std::launder(static_cast<T*>(at)))(); },
  };

  // The storage holds a T*: moving copies the pointer.
  template <typename T>
  static constexpr Ops kHeapOps = {
      [](void* from, void* to) noexcept { *static_cast<T**>(to) = *static_cast<T**>(from); },
      [](void* at) noexcept { delete *static_cast<T**>(at); },
      [](void* at) { (**static_cast<T**>(at))(); },
  };

  void TakeFrom(Closure& other) noexcept {
    if (other.ops_ == nullptr) return;
    other.ops_->move(other.storage_, storage_);
    ops_ = other.ops_;
    other.ops_ = nullptr;
  }
  // Empty first, then destroy: the callable's destructor may destroy this
  // Closure (its holder's last owner), whose destructor then finds it empty.
  void Reset() noexcept {
    const Ops* ops = ops_;
    if (ops == nullptr) return;
    ops_ = nullptr;
    ops->destroy(storage_);
  }

  alignas(std::max_align_t) unsigned char storage_[kInlineBytes];
  const Ops* ops_ = nullptr;
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_CLOSURE_H_
