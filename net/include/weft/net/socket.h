// weft/net/socket.h: a connection (or listener) shared by fibers and pthreads.
//
// A Socket lives in a type-stable pool and is named by a versioned SocketId.
// Socket::Address(id) hands out a SocketUniquePtr (one reference) while the
// socket has not failed; SetFailed() happens once, wakes everything waiting
// on the socket and drops the reference Create() took; when the last
// reference goes the socket is recycled: its fd is closed, its SocketUser
// told (BeforeRecycle) and its slot reused under a new version, so old ids
// fail to address.
//
// Writing is wait-free for callers: Write() pushes the request onto an MPSC
// list (write_head_). The caller that finds the list empty writes once
// itself; whatever is left, and every request pushed meanwhile, is written by
// one KeepWrite fiber, in push order, batched into writev calls. A client
// socket created with a remote_side and no fd connects on the first Write.
//
// Reading: when the fd becomes readable the EventDispatcher calls
// StartInputEvent, which starts at most one fiber per socket running
// on_edge_triggered_events (the nevent_ counter); that callback reads with
// DoRead() until EAGAIN and returns only when MoreReadEvents() says no event
// arrived meanwhile.
#ifndef WEFT_NET_SOCKET_H_
#define WEFT_NET_SOCKET_H_

#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "weft/bthread.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket_id.h"

namespace weft {

class Socket;
namespace net_internal {
class WrittenIdSet;
}  // namespace net_internal

// The owner of a socket's `user` slot: told just before the socket recycles.
class SocketUser {
 public:
  // The users net/ itself looks for on every event: a tag set by their
  // constructors replaces a dynamic_cast per event.
  enum class Kind : uint8_t { kOther, kInputMessenger, kEpollOutRequest };
  SocketUser() = default;
  virtual ~SocketUser() = default;
  virtual void BeforeRecycle(Socket*) {}
  Kind user_kind() const { return kind_; }

 protected:
  // Only the classes named by the tag pass it (a static_cast follows it).
  explicit SocketUser(Kind kind) : kind_(kind) {}

 private:
  const Kind kind_ = Kind::kOther;
};

// Per-connection state kept on a socket by whoever drives it: a protocol's
// partial parse, pipelining queue or authentication verdict, or the
// InputMessenger's own bookkeeping. The socket owns it and deletes it when
// the socket recycles (after the last reference, before the SocketUser's
// BeforeRecycle), so it never outlives the connection and is never shared
// between connections (unlike the SocketUser, which all connections of a
// server share).
class SocketContext {
 public:
  virtual ~SocketContext() = default;
};

// A socket's context slots: one for the InputMessenger (or whatever reading
// callback drives the socket), one for the protocol or user on top of it.
enum class SocketContextSlot : int { kMessenger = 0, kProtocol = 1 };

// A hook run after TCP connects and before any queued write goes out (a TLS
// handshake, a protocol greeting).
//
// StartConnect runs in a fiber of its own (the connecting fiber, never the
// dispatcher's), so it may block or suspend without stalling other sockets.
// It calls done(0, data) on success or done(errno, data) on failure, once,
// from any thread, inside StartConnect or later. The handshake is bounded by
// the connect's deadline (WriteOptions::abstime of the write that connects,
// else SocketOptions::connect_timeout_ms; none if neither is set): past it
// the socket fails with ETIMEDOUT, every queued write's id_wait hears it,
// and StopConnect follows when the socket recycles. A done that comes after
// that (or a second done) does nothing; `data` is a versioned name, never a
// pointer that could dangle. On failure the queued writes' id_wait handlers
// run in the connecting fiber, or in a fresh fiber when done is called from
// elsewhere.
class AppConnect {
 public:
  virtual ~AppConnect() = default;
  virtual void StartConnect(Socket* s, void (*done)(int err, void* data), void* data) = 0;
  // The socket is recycling; drop any reference to it. done may still be
  // called (it is then a no-op).
  virtual void StopConnect(Socket*) {}
};

struct SocketOptions {
  // An fd the socket takes over (closed at recycle), or -1 for a client
  // socket that connects to remote_side on its first write.
  int fd = -1;
  // fd already has O_NONBLOCK and FD_CLOEXEC (accept4 or socket with
  // SOCK_NONBLOCK | SOCK_CLOEXEC): Create skips the fcntl calls that set them.
  bool fd_nonblocking_cloexec = false;
  EndPoint remote_side;
  // Told (BeforeRecycle) when the socket recycles; the socket never deletes
  // it (a user may delete itself there).
  SocketUser* user = nullptr;
  // Run in a fiber (one at a time per socket) when fd becomes readable.
  void (*on_edge_triggered_events)(Socket*) = nullptr;
  std::shared_ptr<AppConnect> app_connect;
  // Fibers started for this socket's events use this keytable pool.
  bthread_keytable_pool_t* keytable_pool = nullptr;
  // Connect timeout for sockets that connect on first write; <= 0: none.
  int connect_timeout_ms = 0;
};

struct SocketDeleter {
  void operator()(Socket* s) const;
};
// One reference to a Socket; dropping it may recycle the socket.
typedef std::unique_ptr<Socket, SocketDeleter> SocketUniquePtr;

class Socket {
 public:
  struct WriteRequest;
  struct EpollOutRequest;

  struct WriteOptions {
    // Errors of this write are reported with bthread_id_error(id_wait, ec)
    // (also when Write itself fails) instead of Write's return value.
    bthread_id_t id_wait = INVALID_BTHREAD_ID;
    // Deadline for connecting, if this write has to connect (CLOCK_REALTIME).
    const timespec* abstime = nullptr;
    // Accept the write even past --weft_socket_max_unwritten_bytes.
    bool ignore_eovercrowded = false;
    // Write completion: called exactly once for every Write given it, with
    // 0 once the last byte of this write went to the kernel, or with the
    // error that ended it (refused, the socket failed or closed first).
    // On refusal it runs before Write returns. It runs in the writing
    // context (the caller, a KeepWrite fiber, or a failing thread) and must
    // not block: start a fiber for anything slow. The socket is alive for
    // the call (the writer holds a reference). Uses: close once a reply is
    // flushed, return a pooled connection once its request is out.
    void (*on_written)(Socket* s, int error_code, void* arg) = nullptr;
    void* on_written_arg = nullptr;
  };

  // Progress value a reading callback starts MoreReadEvents with.
  static constexpr int PROGRESS_INIT = 1;
  // Requests batched into one writev by DoWrite.
  static constexpr size_t DATA_LIST_MAX = 256;
  // KeepWrite re-checks its list at least this often while the fd is full.
  static constexpr int WAIT_EPOLLOUT_TIMEOUT_MS = 50;

  // Creates a socket; *id names it. Takes over options.fd (closed on
  // failure too). Returns 0, or -1 with errno; on failure *id is
  // INVALID_SOCKET_ID when no socket was made (options.user untouched),
  // else the failed socket's id (options.user gets BeforeRecycle as usual).
  static int Create(const SocketOptions& options, SocketId* id);
  // A reference to the socket `id` names, unless it failed or recycled:
  // returns 0 and fills *ptr, else -1.
  static int Address(SocketId id, SocketUniquePtr* ptr);
  // As Address, but also while the socket is failed and not yet recycled:
  // 0 when healthy, 1 when failed, -1 when gone.
  static int AddressFailedAsWell(SocketId id, SocketUniquePtr* ptr);
  // One more reference to a socket the caller already holds.
  void ReAddress(SocketUniquePtr* ptr);

  // Marks the socket failed (only the first call wins: 0; later calls -1),
  // shuts the fd down both ways, wakes waiters, fails queued writes and
  // drops Create's reference. error_code 0 means EFAILEDSOCKET.
  int SetFailed(int error_code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  int SetFailed();
  static int SetFailed(SocketId id);

  // Two ways a connection ends:
  // - an abort, SetFailed (an I/O error, a protocol error, a reset): the
  //   queue is dropped at once and every queued or written-but-unanswered
  //   request's id_wait hears the error;
  // - a graceful close, CloseGracefully (EOF after the last request, a
  //   server stopping, an idle timeout): new writes are refused at once
  //   (Write fails with error_code), the writes already accepted are
  //   flushed in order, and then the socket fails with error_code as by
  //   SetFailed. The flush is bounded by --weft_socket_close_flush_ms:
  //   past it the socket fails anyway (an abort of what is left). A write
  //   racing the close may still be accepted and then fail (its id_wait,
  //   if any, hears error_code). Only the first close or failure counts:
  //   0, or -1 if the socket already failed or is closing.
  int CloseGracefully(int error_code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  // True from CloseGracefully until recycling (also once failed after it).
  bool closing() const { return close_error_code_.load(std::memory_order_acquire) != 0; }

  // Written-but-unanswered requests. A write with id_wait that was written
  // in full keeps its id on the socket, and when the socket fails each such
  // id hears the socket's error (bthread_id_error), so a pending call learns
  // that its connection died. When the reply arrives (or the call ends for
  // any other reason) the RPC layer drops the id with ForgetWrittenId; ids
  // not dropped stay until the socket fails or recycles.
  void ForgetWrittenId(bthread_id_t id);
  // Ids currently kept (tests, diagnostics).
  size_t written_id_count() const;
  bool Failed() const;
  // The error SetFailed recorded (EFAILEDSOCKET if none yet).
  int non_zero_error_code() const;
  std::string error_text() const;

  // Writes (or queues) *data, which is left empty. Returns 0 when accepted;
  // otherwise, with options->id_wait set the error goes to id_wait and 0 is
  // returned, else -1 with errno (EINVAL empty data, EOVERCROWDED, the
  // socket's error if failed). An accepted write is written in full and in
  // order with the caller's other writes, or the socket fails and id_wait
  // (if any) hears the error.
  int Write(IOBuf* data, const WriteOptions* options = nullptr);

  // Write batching. Between BeginWriteBatch and EndWriteBatch the caller
  // holds the right to write: Writes from any fiber or thread are queued
  // behind it without a system call, and EndWriteBatch sends them together
  // (one writev, the rest by KeepWrite). Returns nullptr, with nothing to
  // end, when the socket is failed, not connected, or already has a writer
  // (whose KeepWrite batches what queues behind it anyway). While holding a
  // batch never wait for a write of this socket to complete, or pause on
  // its output draining: those wait for EndWriteBatch. InputMessenger
  // batches the replies of the messages cut from one read this way.
  WriteRequest* BeginWriteBatch();
  void EndWriteBatch(WriteRequest* batch);

  // Connects now (for pools that hand out ready connections): for a client
  // socket that has not connected yet, starts the connect (and AppConnect)
  // as a first Write would and blocks the calling fiber (or pthread) until
  // it is done; writes queued meanwhile keep their order. Returns 0 once
  // connected (at once if the socket already is), or -1 with errno: the
  // connect's error (the socket then failed), ETIMEDOUT past abstime
  // (CLOCK_REALTIME; nullptr: the socket's connect_timeout_ms), or the
  // socket's error if it failed. May suspend.
  int EnsureConnected(const timespec* abstime = nullptr);

  // The context in `slot`, or nullptr. Any thread; the context lives until
  // the socket recycles, so a caller holding a reference may use it.
  // Acquire: pairs with InitContext's release (the context's fields as
  // constructed are visible).
  SocketContext* context(SocketContextSlot slot = SocketContextSlot::kProtocol) const {
    return contexts_[static_cast<int>(slot)].load(std::memory_order_acquire);
  }
  // Installs ctx in `slot` unless one is there: returns ctx, or (deleting
  // ctx) the context installed first. Any thread; one CAS.
  SocketContext* InitContext(SocketContext* ctx,
                             SocketContextSlot slot = SocketContextSlot::kProtocol);

  // Reads at most size_hint bytes into read_buf(). As read(2). Bytes read
  // refresh last_active_us() unless bytes_are_activity is false: then the
  // caller says what activity is (InputMessenger: a complete message), so a
  // peer trickling bytes cannot keep the connection from idling out.
  ssize_t DoRead(size_t size_hint, bool bytes_are_activity = true);
  // The same; *drained: the read took every byte the fd had (it returned
  // less than the room offered) and no event so far reported the peer's
  // close or an error. The caller may then skip the read that would only
  // say EAGAIN and go to MoreReadEvents: bytes or a close arriving later
  // come with a new event (edge-triggered epoll reports every arrival),
  // and a close already reported makes *drained false so it is read.
  ssize_t DoRead(size_t size_hint, bool bytes_are_activity, bool* drained);
  // For reading callbacks: false (and the socket's pending event count
  // reset) when no event arrived since *progress was taken; true (with
  // *progress updated) when the caller must read again.
  bool MoreReadEvents(int* progress);

  // Waits until fd is writable or abstime passes (ETIMEDOUT) or the socket
  // fails. pollin: the fd is already in epoll for input. 0 or -1 with errno.
  int WaitEpollOut(int fd, bool pollin, const timespec* abstime);

  // Called by EventDispatcher. urgent: the reading fiber runs on this
  // worker at once (the caller waits in the run-next slot); otherwise it is
  // queued without a wake-up (BTHREAD_NOSIGNAL: the caller flushes).
  static int StartInputEvent(SocketId id, uint32_t events, const bthread_attr_t& thread_attr,
                             bool urgent = true);
  static int HandleEpollOut(SocketId id);

  SocketId id() const { return this_id_; }
  int fd() const { return fd_.load(std::memory_order_acquire); }
  const EndPoint& remote_side() const { return remote_side_; }
  // Set when the fd is adopted (for client sockets: once connected, i.e.
  // once fd() >= 0, which publishes it).
  const EndPoint& local_side() const { return local_side_; }
  SocketUser* user() const { return user_; }
  // Bytes received and not yet cut by the reading callback. Only the
  // reading fiber (one at a time) touches it.
  IOBuf& read_buf() { return read_buf_; }
  bthread_keytable_pool_t* keytable_pool() const { return keytable_pool_; }
  std::string description() const;

  // Acquire pairs with the release in ReturnFailedWriteRequest: after a
  // failure, reading 0 means every failed writer has been told.
  int64_t unwritten_bytes() const { return unwritten_bytes_.load(std::memory_order_acquire); }
  int64_t in_bytes() const { return in_bytes_.load(std::memory_order_relaxed); }
  int64_t out_bytes() const { return out_bytes_.load(std::memory_order_relaxed); }
  // CLOCK_MONOTONIC microseconds (coarse) of the last read activity (see
  // DoRead) or write that moved bytes.
  int64_t last_active_us() const;
  // Records read activity at now_us (coarse CLOCK_MONOTONIC µs): for
  // reading callbacks that say what activity is (DoRead's
  // bytes_are_activity = false). Any thread.
  void MarkReadActivity(int64_t now_us) {
    last_read_us_.store(now_us, std::memory_order_relaxed);
  }

  // Sockets currently alive (created and not yet recycled), process-wide.
  static int64_t live_count();

  // Only the pool constructs sockets.
  Socket();
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

 private:
  friend struct SocketDeleter;
  friend class EventDispatcher;

  // Formats the failure's text into error_text_ (under error_mu_).
  void StoreErrorText(const char* fmt, va_list ap);
  // Deletes the contexts (protocol first); OnRecycle.
  void DestroyContexts();

  // Drops one reference; recycles the socket when it was the last one.
  int Dereference();
  // Address (failed_too: AddressFailedAsWell).
  static int AddressImpl(SocketId id, bool failed_too, SocketUniquePtr* ptr);
  // Drops the reference an Address call added to a slot whose version
  // (ver1, read by that call) did not match; may recycle.
  void UndoAddress(uint32_t ver1);
  // Closes the fd, resets fields, tells the user and frees the slot.
  void OnRecycle();
  // Adopts fd (non-blocking, close-on-exec, TCP_NODELAY, buffer sizes,
  // epoll). On failure fd_ is -1 and fd still belongs to the caller.
  // flags_set: fd has O_NONBLOCK and FD_CLOEXEC already.
  int ResetFileDescriptor(int fd, bool flags_set = false);
  int SetUpFileDescriptor(int fd, bool flags_set = false);

  static void* ProcessEvent(void* arg);

  // Write path (socket_write.cpp).
  // Write without the empty-data check (EnsureConnected pushes an empty
  // request).
  int PushWrite(IOBuf* data, const WriteOptions& opt);
  // A write refused before it was queued: on_written, then SetError.
  int RefuseWrite(const WriteOptions& opt, int error_code);
  int StartWrite(WriteRequest* req, const WriteOptions& opt);
  static void* KeepWrite(void* arg);
  // Hands the writer's list from req on to a new KeepWrite fiber.
  void StartKeepWrite(WriteRequest* req);
  // Returns the fully written requests from req on, keeping the last one
  // (it anchors the list for IsWriteComplete) and stopping at a close
  // request or one with data left; returns that one.
  WriteRequest* ReturnWrittenExceptLast(WriteRequest* req);
  ssize_t DoWrite(WriteRequest* req);
  bool IsWriteComplete(WriteRequest* old_head, bool singular_node, WriteRequest** new_tail);
  void ReturnSuccessfulWriteRequest(WriteRequest* req);
  void ReturnFailedWriteRequest(WriteRequest* req, int error_code);
  WriteRequest* ReleaseWriteRequestsExceptLast(WriteRequest* req, int error_code);
  void ReleaseAllFailedWriteRequests(WriteRequest* req);
  void AddOutputBytes(ssize_t n);
  // The writer failed with error_code (errno of a write or a wait): fails
  // the socket (logging unless EPIPE) and every queued request from req on.
  void FailWriterAndReleaseAll(WriteRequest* req, int error_code, const char* what);
  // The writer reached the close request of CloseGracefully: everything
  // before it is written, so the socket fails now; req (the close request)
  // and whatever follows it are released as failed.
  void FinishGracefulClose(WriteRequest* req);
  static void OnCloseFlushTimeout(void* arg);
  // The written-but-unanswered list (see ForgetWrittenId).
  void KeepWrittenId(bthread_id_t id);
  void ErrorWrittenIds(int error_code);
  // Reports error_code to id_wait (returns 0) or through errno (-1).
  static int SetError(bthread_id_t id_wait, int error_code);
  // SetError with this (failed) socket's error.
  int ConductError(bthread_id_t id_wait);

  // Connect path (socket_connect.cpp).
  struct PendingConnect;
  int ConnectIfNot(const timespec* abstime, WriteRequest* req);
  int Connect(const timespec* abstime, int (*on_connect)(int fd, int err, void* data), void* data);
  int CheckConnected(int sockfd);
  int HandleEpollOutRequest(int error_code, EpollOutRequest* req);
  static void HandleEpollOutTimeout(void* arg);
  // Starts the connecting fiber (RunCheckConnected); data is a
  // PendingConnect.
  static int KeepWriteIfConnected(int fd, int err, void* data);
  static void* RunCheckConnected(void* arg);
  static void CheckConnectedAndKeepWrite(int fd, int err, void* data);
  void StartAppConnect(PendingConnect* pc);
  // The AppConnect's done; data names the handshake (a bthread_id).
  static void AfterAppConnected(int err, void* data);
  static void OnAppConnectTimeout(void* arg);
  // Ends the handshake named by id_value with err unless done (or another
  // ender) came first, in a fiber of its own (the timer's and SetFailed's
  // callers must not run id_wait handlers).
  static void EndAppConnectInFiber(uint64_t id_value, int err);
  // Ends the connect: starts KeepWrite, or fails the socket and the queued
  // requests. tcp: err is the TCP connect's (timeouts count toward
  // --weft_connect_timeout_as_unreachable), else the AppConnect's.
  static void FinishConnect(PendingConnect* pc, int err, bool tcp);

  // High 32 bits: version; low 32 bits: references. Version == id version:
  // healthy; id version + 1: failed; anything else: recycled (the slot may
  // already hold a newer socket).
  // Cache lines: the reference count is bumped by every Address and
  // dereference, from every thread that touches the socket; the reading
  // fiber's fields and the writer's fields each change on every message.
  // Each group gets its own line (kCacheLine apart) so a busy reader, a
  // busy writer and callers addressing the socket do not bounce one line
  // between CPUs; the identity fields after versioned_ref_ are read-mostly.
  static constexpr size_t kCacheLine = 64;
  alignas(kCacheLine) std::atomic<uint64_t> versioned_ref_{0};
  alignas(kCacheLine) SocketId this_id_ = INVALID_SOCKET_ID;
  std::atomic<int> fd_{-1};
  EndPoint remote_side_;
  EndPoint local_side_;
  SocketUser* user_ = nullptr;
  void (*on_edge_triggered_events_)(Socket*) = nullptr;
  std::shared_ptr<AppConnect> app_connect_;
  bthread_keytable_pool_t* keytable_pool_ = nullptr;
  int connect_timeout_ms_ = 0;

  // ---- the reading fiber's line ----
  // Input events not yet consumed by the reading fiber; 0 means no reading
  // fiber runs.
  alignas(kCacheLine) std::atomic<int> nevent_{0};
  // Set (before nevent_'s increment) by an input event that reported the
  // peer's close or an error: reads must then go on to read() == 0 or the
  // error, not stop at a short read (see DoRead's drained).
  std::atomic<bool> hup_seen_{false};
  IOBuf read_buf_;
  std::atomic<int64_t> in_bytes_{0};
  std::atomic<int64_t> last_read_us_{0};

  // ---- the writer's line ----
  // The newest pushed write request, or nullptr when nobody is writing.
  alignas(kCacheLine) std::atomic<WriteRequest*> write_head_{nullptr};
  std::atomic<int64_t> unwritten_bytes_{0};
  // Bumped and woken by HandleEpollOut and SetFailed; KeepWrite waits on it.
  std::atomic<int>* epollout_butex_ = nullptr;
  std::atomic<int64_t> out_bytes_{0};
  std::atomic<int64_t> last_write_us_{0};

  // ---- cold: connecting, closing, failing ----

  // The temporary socket of a connect in flight (INVALID_SOCKET_ID if
  // none): SetFailed fails it to cancel the connect.
  alignas(kCacheLine) std::atomic<SocketId> connect_id_{INVALID_SOCKET_ID};
  // The AppConnect handshake in progress (its bthread_id's value), 0 if
  // none: SetFailed ends it (a handshake without a deadline would otherwise
  // hold the queued writes until done). A stale value is harmless: the id
  // is versioned and its ender destroyed it.
  std::atomic<uint64_t> app_connect_id_{0};

  // Non-zero once CloseGracefully ran: the code the socket fails with when
  // the flush is over. Acquire/release: a Write that reads it non-zero
  // refuses (the text written before it is visible through error_mu_).
  std::atomic<int> close_error_code_{0};
  // The flush bound's timer (0 if none); written by CloseGracefully (whose
  // caller holds a reference) and read by OnRecycle.
  bthread_timer_t close_timer_ = 0;

  // Ids of written-but-unanswered requests (see ForgetWrittenId); closed
  // when the socket fails (then new ids are errored at once instead of
  // kept), so an id is either errored by SetFailed or by its adder. Built
  // with the pool's object, never replaced (src/written_id_set.h).
  const std::unique_ptr<net_internal::WrittenIdSet> written_ids_;

  std::atomic<int> error_code_{0};
  mutable std::mutex error_mu_;
  std::string error_text_;  // guarded by error_mu_

  // See context(); owned, deleted at recycle.
  std::atomic<SocketContext*> contexts_[2] = {};
};

}  // namespace weft

#endif  // WEFT_NET_SOCKET_H_
