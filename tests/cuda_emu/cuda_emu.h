// CUDA emulation for checking tensorlite's .cu kernels on a CPU.
//
// The same kernel source that NVRTC compiles for the GPU is compiled by g++ after this header
// (tests/cuda_emu/__init__.py writes the translation unit, builds it and launches kernels by
// name). What the header provides:
//
//   threadIdx blockIdx blockDim gridDim   per CUDA thread (macros reading the running thread)
//   __syncthreads()                       a barrier across the block's threads
//   __shared__ T name[N];                 rewritten by tests/cuda_emu/__init__.py into a reference
//                                         to storage of its own (emu::static_shared), one
//                                         instance, as blocks run one at a time, filled with
//                                         0xff bytes (NaN, or -1 for integers) at the start of
//                                         every block: a value read before the block wrote it
//                                         shows instead of carrying over from the last block
//   extern __shared__ T name[]            rewritten by tests/cuda_emu/__init__.py into a pointer
//                                         to the launch's dynamic shared memory: exactly
//                                         shared_mem bytes, filled with 0xff bytes (NaN) at
//                                         the start of every block
//   __shfl_sync/_xor/_down/_up, __syncwarp, __ballot_sync/__any_sync/__all_sync
//                                         a per-warp exchange with a barrier over the lanes named
//                                         in the mask; reading a lane that did not take part is
//                                         reported as an error (undefined on a GPU)
//   atomicAdd/Sub/Exch/Max/Min/Or/And/CAS/Inc on std::atomic_ref, relaxed as CUDA's are;
//   __threadfence
//   the device math the kernels use (rsqrtf, __expf, ...), __ldg, __ldcs, __stcs
//
// Two ways to run a block's threads:
//   default        fibers on one OS thread with a hand-written context switch (x86-64; other
//                  CPUs use ucontext). A switch costs a few nanoseconds, so a launch of 64
//                  blocks x 256 threads runs in milliseconds.
//   EMU_THREADS    one OS thread per CUDA thread (a pool made once per process), barriers on a
//                  mutex and condition variables. For ThreadSanitizer and AddressSanitizer
//                  builds: TSan sees the real threads and only CUDA's orderings (see Quiet
//                  below), so a missing __syncthreads is reported as a data race.
//
// Blocks run one after another, in the order emu_set_block_order picks (forward, reverse or
// shuffled), so a kernel whose result depends on the order of its blocks is caught by running
// it twice. Threads that exit count as arrived at later barriers, as on the GPU. A barrier
// that can never complete (some threads wait at __syncthreads, the others at a shuffle or done)
// is reported as a deadlock instead of hanging. Errors come back to the launcher as a message;
// the launch returns nonzero.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#ifdef EMU_THREADS
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#else
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#endif

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

// ---- CUDA keywords -----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };

namespace emu {

constexpr int kWarp = 32;
constexpr unsigned kMaxThreads = 1024;

struct Barrier {
    int arrived = 0;          // threads waiting at it now
    unsigned gen = 0;         // bumped when it releases
#ifdef EMU_THREADS
    std::condition_variable cv;   // its waiters sleep here: a release wakes only them
#endif
    void reset() {
        arrived = 0;
        gen = 0;
    }
};

struct Warp {
    Barrier bar;
    char sync[2];             // ThreadSanitizer's happens-before of __syncwarp, by parity
    unsigned mask = 0;        // the mask the current exchange was entered with
    int op = 0;               // and its kind (shfl, ballot, syncwarp): all lanes must agree
    unsigned live = 0;        // lanes that exist and have not exited
    unsigned wrote[2] = {0, 0};
    unsigned long long slot[2][kWarp];  // double-buffered by generation parity
};

struct Thread {
    uint3 tid;
    unsigned lane, warp;
    bool done;
    void* sp;                 // saved stack pointer (fibers)
    char* stack;              // the fiber's stack (lowest usable address)
};

struct Block {
    uint3 bid;
    dim3 bdim, gdim;
    int n = 0, live = 0, waiting = 0;
    Barrier bar;
    char sync[2];             // ThreadSanitizer's happens-before of __syncthreads, by parity
    Warp warps[kMaxThreads / kWarp];
    char* dyn = nullptr;      // dynamic shared memory
    size_t dyn_size = 0;
    bool aborted = false;
    char error[512] = {0};
    void (*thunk)(void**) = nullptr;
    void** args = nullptr;
    Thread threads[kMaxThreads];
#ifdef EMU_THREADS
    std::mutex mu;
#endif
};

inline Block* g_block = nullptr;
#ifdef EMU_THREADS
inline thread_local Thread* g_thread = nullptr;
#else
inline Thread* g_thread = nullptr;
#endif

}  // namespace emu

#define threadIdx (::emu::g_thread->tid)
#define blockIdx (::emu::g_block->bid)
#define blockDim (::emu::g_block->bdim)
#define gridDim (::emu::g_block->gdim)
#define warpSize 32

namespace emu {

// ---- scheduling primitives: fibers or OS threads -----------------------------------------
struct Abort {};

// ThreadSanitizer sees the kernels' memory accesses and exactly CUDA's orderings: the
// emulator's own locking and bookkeeping are hidden from it (a mutex taken by every shuffle
// would order any two warps and hide real races), and __syncthreads (the block), __syncwarp
// (its lanes) and a thread's exit publish happens-before edges explicitly. Shuffles and votes
// order no memory, as in CUDA.
#if defined(EMU_THREADS) && defined(__SANITIZE_THREAD__)
extern "C" {
void AnnotateIgnoreSyncBegin(const char*, int);
void AnnotateIgnoreSyncEnd(const char*, int);
void AnnotateIgnoreReadsBegin(const char*, int);
void AnnotateIgnoreReadsEnd(const char*, int);
void AnnotateIgnoreWritesBegin(const char*, int);
void AnnotateIgnoreWritesEnd(const char*, int);
void __tsan_acquire(void*);
void __tsan_release(void*);
}
struct Quiet {
    Quiet() {
        AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
        AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
        AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    }
    ~Quiet() {
        AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
        AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
        AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    }
};
inline void hb_release(void* a) {
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    __tsan_release(a);
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
}
inline void hb_acquire(void* a) {
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    __tsan_acquire(a);
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
}
#else
struct Quiet {};
inline void hb_release(void*) {}
inline void hb_acquire(void*) {}
#endif

#ifdef EMU_THREADS

struct Lock {
    Quiet quiet;                       // first in, last out: the whole critical section is hidden
    std::unique_lock<std::mutex> lk;
    Lock() : lk(g_block->mu) {}
};
inline void wake(Barrier& bar) { bar.cv.notify_all(); }
inline void notify(Lock&);    // wake every waiter (an abort): below, once Block is complete
// Wait (lock held) until pred() holds; an aborted launch unwinds the kernel with Abort.
template <class Pred> inline void wait_until(Lock& l, Barrier& bar, Pred pred) {
    bar.cv.wait(l.lk, [&] { return pred() || g_block->aborted; });
    if (!pred() && g_block->aborted) throw Abort{};
}
[[noreturn]] inline void leave_aborted(Lock&) { throw Abort{}; }

#else  // fibers

inline void* g_main_sp = nullptr;
struct Lock {};
inline void notify(Lock&) {}
inline void wake(Barrier&) {}

#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* next_sp);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".hidden emu_ctx_switch\n"
    ".globl emu_ctx_switch\n"
    ".type emu_ctx_switch,@function\n"
    "emu_ctx_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size emu_ctx_switch, .-emu_ctx_switch\n");
inline void ctx_switch(void** save, void* next) { emu_ctx_switch(save, next); }
#else
inline ucontext_t g_main_uc;
inline ucontext_t g_uc[kMaxThreads];
inline void ctx_switch(void** save, void* next) {
    swapcontext(static_cast<ucontext_t*>(static_cast<void*>(save)), static_cast<ucontext_t*>(next));
}
#endif

constexpr size_t kStack = 64 * 1024;
constexpr size_t kGuard = 4096;
inline char* g_stacks[kMaxThreads] = {nullptr};

[[noreturn]] void fiber_finish();

extern "C" inline void emu_fiber_entry() {
    g_block->thunk(g_block->args);
    fiber_finish();
}

// A fresh fiber's stack: emu_ctx_switch pops mxcsr/fpu word and six registers, then returns
// into emu_fiber_entry with the stack aligned as after a call.
inline void init_fiber(Thread& t, unsigned i) {
    if (!g_stacks[i]) {
        void* p = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) { perror("cuda_emu: mmap"); abort(); }
        mprotect(p, kGuard, PROT_NONE);          // overflow faults instead of corrupting
        g_stacks[i] = static_cast<char*>(p) + kGuard;
    }
    t.stack = g_stacks[i];
#if defined(__x86_64__)
    uintptr_t top = (reinterpret_cast<uintptr_t>(t.stack) + kStack) & ~uintptr_t(15);
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    *--s = 0;                                               // fake return address of the entry
    *--s = reinterpret_cast<uint64_t>(&emu_fiber_entry);    // emu_ctx_switch returns here
    for (int r = 0; r < 6; ++r) *--s = 0;                   // rbp rbx r12 r13 r14 r15
    *--s = 0x037F00001F80ull;                               // mxcsr 0x1f80, x87 cw 0x37f
    t.sp = s;
#else
    ucontext_t* uc = &g_uc[i];
    getcontext(uc);
    uc->uc_stack.ss_sp = t.stack;
    uc->uc_stack.ss_size = kStack;
    uc->uc_link = nullptr;
    makecontext(uc, reinterpret_cast<void (*)()>(&emu_fiber_entry), 0);
    t.sp = uc;
#endif
}

inline void* main_ctx() {
#if defined(__x86_64__)
    return g_main_sp;
#else
    return &g_main_uc;
#endif
}
inline void** main_save() {
#if defined(__x86_64__)
    return &g_main_sp;
#else
    return reinterpret_cast<void**>(&g_main_uc);
#endif
}
inline void** save_of(Thread* t) {
#if defined(__x86_64__)
    return &t->sp;
#else
    return reinterpret_cast<void**>(&g_uc[t - g_block->threads]);
#endif
}

// Switch to the next unfinished thread of the block, round robin.
inline void yield() {
    Block* b = g_block;
    Thread* me = g_thread;
    int i = static_cast<int>(me - b->threads);
    for (int k = 1; k <= b->n; ++k) {
        Thread* t = &b->threads[(i + k) % b->n];
        if (!t->done) {
            if (t == me) return;
            g_thread = t;
            ctx_switch(save_of(me), t->sp);
            return;  // resumed: whoever switched here set g_thread = me
        }
    }
}

[[noreturn]] inline void to_main() {
    Thread* me = g_thread;
    ctx_switch(save_of(me), main_ctx());
    __builtin_unreachable();
}

template <class Pred> inline void wait_until(Lock&, Barrier&, Pred pred) {
    while (!pred()) {
        if (g_block->aborted) to_main();
        yield();
    }
}
[[noreturn]] inline void leave_aborted(Lock&) { to_main(); }

#endif  // fibers

// ---- errors --------------------------------------------------------------------------------
__attribute__((format(printf, 1, 2))) inline void set_error(const char* fmt, ...) {
    Block* bl = g_block;
    if (bl->aborted) return;
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(bl->error, sizeof bl->error, "block (%u,%u,%u): %s", bl->bid.x, bl->bid.y, bl->bid.z, msg);
    bl->aborted = true;
}

#define EMU_FAIL(l, ...)              \
    do {                              \
        ::emu::set_error(__VA_ARGS__); \
        ::emu::notify(l);             \
        ::emu::leave_aborted(l);      \
    } while (0)

inline void check_deadlock(Lock& l) {
    Block* b = g_block;
    if (b->live > 0 && b->waiting == b->live)
        EMU_FAIL(l, "deadlock: all %d running threads wait (%d of them at __syncthreads) and none can "
                    "proceed; %d threads have exited", b->live, b->bar.arrived, b->n - b->live);
}

// Release a barrier whose `waiters` waiting threads may now go on.
inline void release(Barrier& bar, int waiters) {
    g_block->waiting -= waiters;
    bar.arrived = 0;
    bar.gen++;
    wake(bar);
}

#ifdef EMU_THREADS
inline void notify(Lock&) {
    Block* b = g_block;
    b->bar.cv.notify_all();
    for (int w = 0; w < (b->n + kWarp - 1) / kWarp; ++w) b->warps[w].bar.cv.notify_all();
}
#endif

// ---- __syncthreads --------------------------------------------------------------------------
inline void syncthreads() {
    Lock l;
    Block* b = g_block;
    if (b->aborted) leave_aborted(l);
    Barrier& bar = b->bar;
    unsigned gen = bar.gen;
    hb_release(&b->sync[gen & 1u]);
    if (++bar.arrived == b->live) {
        release(bar, bar.arrived - 1);
    } else {
        b->waiting++;
        check_deadlock(l);
        wait_until(l, bar, [&] { return bar.gen != gen; });
    }
    hb_acquire(&b->sync[gen & 1u]);
}

// ---- warp exchange --------------------------------------------------------------------------
enum Op { kShfl = 1, kSyncwarp, kVote };

inline unsigned expected_lanes(const Warp& w) { return static_cast<unsigned>(__builtin_popcount(w.mask & w.live)); }

// Enter an exchange: publish `bits`, wait for every live lane named in mask; returns the parity
// of the slots to read.
inline int exchange(Lock& l, unsigned mask, int op, unsigned long long bits, const char* name) {
    Block* b = g_block;
    if (b->aborted) leave_aborted(l);
    Thread* t = g_thread;
    Warp& w = b->warps[t->warp];
    if (!((mask >> t->lane) & 1u))
        EMU_FAIL(l, "%s called by lane %u of warp %u with a mask (0x%08x) that does not name it",
                 name, t->lane, t->warp, mask);
    if (w.bar.arrived == 0) {
        w.mask = mask;
        w.op = op;
    } else if (w.mask != mask || w.op != op) {
        EMU_FAIL(l, "lanes of warp %u meet at different warp operations or masks (%s with 0x%08x, "
                    "another lane's with 0x%08x)", t->warp, name, mask, w.mask);
    }
    int p = static_cast<int>(w.bar.gen & 1u);
    w.slot[p][t->lane] = bits;
    w.wrote[p] |= 1u << t->lane;
    unsigned gen = w.bar.gen;
    if (op == kSyncwarp) hb_release(&w.sync[p]);
    if (static_cast<unsigned>(++w.bar.arrived) == expected_lanes(w)) {
        w.wrote[p ^ 1] = 0;  // the next exchange's slots; every reader of them is done
        release(w.bar, w.bar.arrived - 1);
    } else {
        b->waiting++;
        check_deadlock(l);
        wait_until(l, w.bar, [&] { return w.bar.gen != gen; });
    }
    if (op == kSyncwarp) hb_acquire(&w.sync[p]);
    return p;
}

inline unsigned long long read_lane(Lock& l, int p, unsigned src, const char* name) {
    Warp& w = g_block->warps[g_thread->warp];
    if (!((w.wrote[p] >> src) & 1u))
        EMU_FAIL(l, "%s: lane %u of warp %u reads lane %u, which did not take part (undefined on a GPU)",
                 name, g_thread->lane, g_thread->warp, src);
    return w.slot[p][src];
}

template <class T> inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles of types wider than 8 bytes are not emulated");
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T> inline T from_bits(unsigned long long u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

// kind: 0 shfl (src lane), 1 xor, 2 down, 3 up
template <class T> inline T shfl(unsigned mask, T var, int kind, int arg, int width) {
    Lock l;
    if (width <= 0 || width > kWarp || (width & (width - 1)))
        EMU_FAIL(l, "shuffle width %d is not a power of two <= 32", width);
    unsigned lane = g_thread->lane;
    int p = exchange(l, mask, kShfl, to_bits(var), "__shfl_sync");
    unsigned base = lane & ~static_cast<unsigned>(width - 1);
    int src;
    switch (kind) {
        case 0: src = static_cast<int>(base) + (arg & (width - 1)); break;
        case 1: src = static_cast<int>(lane ^ static_cast<unsigned>(arg));
                if (src >= static_cast<int>(base) + width) src = static_cast<int>(lane);
                break;
        case 2: src = static_cast<int>(lane) + arg;
                if (src >= static_cast<int>(base) + width) src = static_cast<int>(lane);
                break;
        default: src = static_cast<int>(lane) - arg;
                if (src < static_cast<int>(base)) src = static_cast<int>(lane);
                break;
    }
    T r = from_bits<T>(read_lane(l, p, static_cast<unsigned>(src), "__shfl_sync"));
    return r;
}

// kind: 0 ballot, 1 any, 2 all
inline unsigned vote(unsigned mask, int pred, int kind) {
    Lock l;
    int p = exchange(l, mask, kVote, pred ? 1ull : 0ull, "__ballot_sync");
    Warp& w = g_block->warps[g_thread->warp];
    unsigned r = 0;
    for (unsigned i = 0; i < static_cast<unsigned>(kWarp); ++i)
        if (((w.wrote[p] >> i) & 1u) && w.slot[p][i]) r |= 1u << i;
    if (kind == 1) return r != 0;
    if (kind == 2) return r == w.wrote[p];
    return r;
}

inline void syncwarp(unsigned mask) {
    Lock l;
    exchange(l, mask, kSyncwarp, 0, "__syncwarp");
}

// ---- a thread ends ---------------------------------------------------------------------------
inline void thread_exit(Lock& l) {
    Block* b = g_block;
    Thread* t = g_thread;
    hb_release(&b->sync[b->bar.gen & 1u]);     // its writes are seen after the next barrier
    t->done = true;
    b->live--;
    Warp& w = b->warps[t->warp];
    w.live &= ~(1u << t->lane);
    if (b->bar.arrived > 0 && b->bar.arrived == b->live) release(b->bar, b->bar.arrived);
    if (w.bar.arrived > 0 && static_cast<unsigned>(w.bar.arrived) == expected_lanes(w)) {
        w.wrote[(w.bar.gen & 1u) ^ 1u] = 0;
        release(w.bar, w.bar.arrived);
    }
    if (!b->aborted && b->live > 0 && b->waiting == b->live) {
        set_error("deadlock: the remaining %d threads wait (%d of them at __syncthreads) for threads "
                  "that have exited", b->live, b->bar.arrived);
        notify(l);
    }
}

#ifndef EMU_THREADS
[[noreturn]] inline void fiber_finish() {
    Lock l;
    thread_exit(l);
    Block* b = g_block;
    if (b->live == 0 || b->aborted) to_main();
    yield();                     // never comes back: this thread is done
    to_main();
}
#endif

// ---- shared memory, kernels' registry, launch ---------------------------------------------
inline void* dynamic_smem() { return g_block->dyn; }

// Static __shared__ variables: each declaration gets storage of its own, registered the first
// time a thread reaches it and filled with 0xff then and at the start of every later block.
constexpr int kMaxSharedVars = 256;
inline char* g_shared_at[kMaxSharedVars];
inline size_t g_shared_size[kMaxSharedVars];
inline int g_shared_count = 0;

inline void* register_shared(void* at, size_t size) {
    if (g_shared_count == kMaxSharedVars) {
        std::fprintf(stderr, "cuda_emu: more than %d __shared__ declarations\n", kMaxSharedVars);
        std::abort();
    }
    g_shared_at[g_shared_count] = static_cast<char*>(at);
    g_shared_size[g_shared_count++] = size;
    std::memset(at, 0xff, size);
    return at;
}

inline void poison_shared() {
    for (int i = 0; i < g_shared_count; ++i) std::memset(g_shared_at[i], 0xff, g_shared_size[i]);
}

// One per declaration (K is the translator's counter), so each is its own variable.
template <class T, int K>
inline T& static_shared() {
    alignas(16) static T storage;
    static T* at = static_cast<T*>(register_shared(&storage, sizeof(T)));   // thread-safe init
    return *at;
}

struct KernelInfo {
    const char* name;
    void (*thunk)(void**);
    int nargs;
    const size_t* sizes;
    const unsigned char* is_ptr;
};
inline KernelInfo g_kernels[256];
inline int g_nkernels = 0;

template <class F> struct Sig;
template <class... A> struct Sig<void (*)(A...)> {
    static constexpr int nargs = sizeof...(A);
    static inline const size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};
    static inline const unsigned char is_ptr[sizeof...(A) + 1] = {static_cast<unsigned char>(std::is_pointer_v<A>)..., 0};
    template <auto f, size_t... I> static void call(void** args, std::index_sequence<I...>) {
        (void)args;
        f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
    }
    template <auto f> static void thunk(void** args) { call<f>(args, std::index_sequence_for<A...>{}); }
};

struct Register {
    Register(const char* name, void (*thunk)(void**), int nargs, const size_t* sizes, const unsigned char* is_ptr) {
        g_kernels[g_nkernels++] = KernelInfo{name, thunk, nargs, sizes, is_ptr};
    }
};

inline int g_order = 0;                      // 0 forward, 1 reverse, 2 shuffled
inline unsigned long long g_order_seed = 0;
inline std::atomic<bool> g_busy{false};

inline unsigned long long splitmix(unsigned long long& s) {
    unsigned long long z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline void start_block(Block* b, unsigned long long lin) {
    b->bid.x = static_cast<unsigned>(lin % b->gdim.x);
    b->bid.y = static_cast<unsigned>((lin / b->gdim.x) % b->gdim.y);
    b->bid.z = static_cast<unsigned>(lin / (static_cast<unsigned long long>(b->gdim.x) * b->gdim.y));
    b->live = b->n;
    b->waiting = 0;
    b->bar.reset();
    for (int w = 0; w < (b->n + kWarp - 1) / kWarp; ++w) {
        Warp& wp = b->warps[w];
        wp.bar.reset();
        wp.mask = 0;
        wp.op = 0;
        wp.wrote[0] = wp.wrote[1] = 0;
        int lanes = b->n - w * kWarp < kWarp ? b->n - w * kWarp : kWarp;
        wp.live = lanes == kWarp ? 0xffffffffu : ((1u << lanes) - 1u);
    }
    if (b->dyn_size) std::memset(b->dyn, 0xff, b->dyn_size);   // NaN: uninitialised reads show
    poison_shared();                                              // static __shared__ as well
    for (int i = 0; i < b->n; ++i) {
        Thread& t = b->threads[i];
        unsigned u = static_cast<unsigned>(i);
        t.tid.x = u % b->bdim.x;
        t.tid.y = (u / b->bdim.x) % b->bdim.y;
        t.tid.z = u / (b->bdim.x * b->bdim.y);
        t.lane = u % kWarp;
        t.warp = u / kWarp;
        t.done = false;
    }
}

#ifdef EMU_THREADS
// A barrier over the threads of a launch (all of them take part: none exits early).
struct LaunchBarrier {
    std::mutex mu;
    std::condition_variable cv;
    int n = 0, arrived = 0;
    unsigned gen = 0;
    void wait() {
        std::unique_lock<std::mutex> lk(mu);
        unsigned g = gen;
        if (++arrived == n) {
            arrived = 0;
            gen++;
            cv.notify_all();
        } else {
            cv.wait(lk, [&] { return gen != g; });
        }
    }
};

// OS threads for the CUDA threads, created once per process (as many as the largest block
// so far: creating a thread costs ~2 ms under ThreadSanitizer) and handed one launch at a
// time. Thread i of a launch plays CUDA thread i of every block in turn.
struct Pool {
    std::mutex mu;
    std::condition_variable work_cv, done_cv;
    std::vector<std::thread> threads;
    unsigned long long job = 0;
    int active = 0, done = 0;
    bool stop = false;
    void (*work)(void*, int) = nullptr;
    void* ctx = nullptr;

    void loop(int i) {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> lk(mu);
        for (;;) {
            work_cv.wait(lk, [&] { return stop || (job != seen && i < active); });
            if (stop) return;
            seen = job;
            lk.unlock();
            work(ctx, i);
            lk.lock();
            if (++done == active) done_cv.notify_all();
        }
    }
    void run(int n, void (*fn)(void*, int), void* c) {
        std::unique_lock<std::mutex> lk(mu);
        while (static_cast<int>(threads.size()) < n) {
            int i = static_cast<int>(threads.size());
            threads.emplace_back([this, i] { loop(i); });
        }
        work = fn;
        ctx = c;
        active = n;
        done = 0;
        job++;
        work_cv.notify_all();
        done_cv.wait(lk, [&] { return done == active; });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lk(mu);
            stop = true;
        }
        work_cv.notify_all();
        for (auto& t : threads) t.join();
    }
};
inline Pool g_pool;

struct BlocksJob {
    Block* b;
    const unsigned long long* lins;
    unsigned long long nblocks;
    LaunchBarrier barrier;
};

// The blocks one after another, meeting at a barrier before and after each (thread 0 sets up
// the next block in between), so a block sees the previous one's writes, as on a GPU.
inline void run_blocks_on(void* ctx, int i) {
    BlocksJob& job = *static_cast<BlocksJob*>(ctx);
    Block* b = job.b;
    g_thread = &b->threads[i];
    for (unsigned long long k = 0; k < job.nblocks; ++k) {
        if (i == 0) start_block(b, job.lins[k]);
        job.barrier.wait();
        try {
            b->thunk(b->args);
        } catch (Abort&) {
        }
        {
            Lock l;
            thread_exit(l);
        }
        job.barrier.wait();
        if (b->aborted) break;                   // every thread reads it after the barrier
    }
    g_thread = nullptr;
}

inline void run_blocks(Block* b, const unsigned long long* lins, unsigned long long nblocks) {
    BlocksJob job{b, lins, nblocks, {}};
    job.barrier.n = b->n;
    g_pool.run(b->n, &run_blocks_on, &job);
}
#else
inline void run_block(Block* b) {
    for (int i = 0; i < b->n; ++i) init_fiber(b->threads[i], static_cast<unsigned>(i));
    g_thread = &b->threads[0];
    ctx_switch(main_save(), b->threads[0].sp);
    g_thread = nullptr;
}
#endif

inline int launch(int k, const unsigned grid[3], const unsigned block[3], size_t shmem, void** args,
                  char* err, size_t errlen) {
    auto say = [&](const char* m) { snprintf(err, errlen, "%s", m); return 1; };
    if (k < 0 || k >= g_nkernels) return say("no such kernel");
    unsigned long long nthreads = 1ull * block[0] * block[1] * block[2];
    if (!block[0] || !block[1] || !block[2] || !grid[0] || !grid[1] || !grid[2])
        return say("grid and block dimensions must be positive");
    if (nthreads > kMaxThreads || block[0] > 1024 || block[1] > 1024 || block[2] > 64)
        return say("too many threads per block (at most 1024; x, y <= 1024, z <= 64)");
    if (grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535)
        return say("grid too large (x < 2^31, y and z <= 65535)");
    if (shmem > 48 * 1024)
        return say("more than 48 KiB of dynamic shared memory needs the kernel's "
                   "max_dynamic_shared_size_bytes attribute raised first");
    bool expected = false;
    if (!g_busy.compare_exchange_strong(expected, true)) return say("concurrent launches are not supported");

    static Block* blk = new Block();   // one block at a time; reused across launches
    Block* b = blk;
    b->thunk = g_kernels[k].thunk;
    b->args = args;
    b->bdim = dim3(block[0], block[1], block[2]);
    b->gdim = dim3(grid[0], grid[1], grid[2]);
    b->n = static_cast<int>(nthreads);
    b->aborted = false;
    b->error[0] = 0;
    b->dyn_size = shmem;
    b->dyn = static_cast<char*>(std::malloc(shmem ? shmem : 1));
    g_block = b;

    unsigned long long nblocks = 1ull * grid[0] * grid[1] * grid[2];
    unsigned long long* order = static_cast<unsigned long long*>(std::malloc(nblocks * sizeof *order));
    for (unsigned long long i = 0; i < nblocks; ++i) order[i] = g_order == 1 ? nblocks - 1 - i : i;
    if (g_order == 2) {
        unsigned long long s = g_order_seed;
        for (unsigned long long i = nblocks; i > 1; --i) {
            unsigned long long j = splitmix(s) % i;
            unsigned long long tmp = order[i - 1]; order[i - 1] = order[j]; order[j] = tmp;
        }
    }
#ifdef EMU_THREADS
    run_blocks(b, order, nblocks);
#else
    for (unsigned long long i = 0; i < nblocks && !b->aborted; ++i) {
        start_block(b, order[i]);
        run_block(b);
    }
#endif
    int rc = 0;
    if (b->aborted) {
        snprintf(err, errlen, "%s: %s", g_kernels[k].name, b->error);
        rc = 1;
    }
    std::free(order);
    std::free(b->dyn);
    b->dyn = nullptr;
    g_block = nullptr;
    g_busy = false;
    return rc;
}

}  // namespace emu

// ---- CUDA device functions --------------------------------------------------------------
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }
template <class T> inline T __shfl_sync(unsigned mask, T var, int src, int width = 32) { return emu::shfl(mask, var, 0, src, width); }
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int lm, int width = 32) { return emu::shfl(mask, var, 1, lm, width); }
template <class T> inline T __shfl_down_sync(unsigned mask, T var, unsigned d, int width = 32) { return emu::shfl(mask, var, 2, static_cast<int>(d), width); }
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned d, int width = 32) { return emu::shfl(mask, var, 3, static_cast<int>(d), width); }
inline unsigned __ballot_sync(unsigned mask, int pred) { return emu::vote(mask, pred, 0); }
inline int __any_sync(unsigned mask, int pred) { return static_cast<int>(emu::vote(mask, pred, 1)); }
inline int __all_sync(unsigned mask, int pred) { return static_cast<int>(emu::vote(mask, pred, 2)); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() {
    emu::Lock l;
    EMU_FAIL(l, "__trap() called by thread (%u,%u,%u)", threadIdx.x, threadIdx.y, threadIdx.z);
}

// CUDA's atomics are relaxed: they order no other memory (ThreadSanitizer sees no edge either).
constexpr std::memory_order kRelaxed = std::memory_order_relaxed;
template <class T> inline T atomicAdd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_add(v, kRelaxed); }
template <class T> inline T atomicSub(T* a, T v) { return std::atomic_ref<T>(*a).fetch_sub(v, kRelaxed); }
template <class T> inline T atomicExch(T* a, T v) { return std::atomic_ref<T>(*a).exchange(v, kRelaxed); }
template <class T> inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v, kRelaxed); }
template <class T> inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v, kRelaxed); }
template <class T> inline T atomicCAS(T* a, T cmp, T v) {
    std::atomic_ref<T>(*a).compare_exchange_strong(cmp, v, kRelaxed);
    return cmp;
}
template <class T> inline T atomicMax(T* a, T v) {
    std::atomic_ref<T> r(*a);
    T old = r.load(kRelaxed);
    while (old < v && !r.compare_exchange_weak(old, v, kRelaxed)) {}
    return old;
}
template <class T> inline T atomicMin(T* a, T v) {
    std::atomic_ref<T> r(*a);
    T old = r.load(kRelaxed);
    while (old > v && !r.compare_exchange_weak(old, v, kRelaxed)) {}
    return old;
}
inline unsigned atomicInc(unsigned* a, unsigned v) {
    std::atomic_ref<unsigned> r(*a);
    unsigned old = r.load(kRelaxed);
    while (!r.compare_exchange_weak(old, old >= v ? 0u : old + 1u, kRelaxed)) {}
    return old;
}

template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((1ull * a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline long long __double_as_longlong(double d) { long long x; std::memcpy(&x, &d, 8); return x; }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
// CUDA's integer min/max overloads (floats use fminf/fmaxf or the std:: overloads)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Each kernel tests/cuda_emu/__init__.py finds gets a line EMU_KERNEL(name) after the source.
#define EMU_KERNEL(name)                                                                  \
    static ::emu::Register emu_register_##name(                                          \
        #name, &::emu::Sig<decltype(&name)>::thunk<&name>, ::emu::Sig<decltype(&name)>::nargs, \
        ::emu::Sig<decltype(&name)>::sizes, ::emu::Sig<decltype(&name)>::is_ptr);

// ---- what tests/cuda_emu/__init__.py and the sanitizer driver call ----------------------------------
#define EMU_ENTRY_POINTS                                                                          \
    EMU_EXPORT int emu_kernel_count() { return ::emu::g_nkernels; }                                \
    EMU_EXPORT const char* emu_kernel_name(int k) { return ::emu::g_kernels[k].name; }             \
    EMU_EXPORT int emu_kernel_nargs(int k) { return ::emu::g_kernels[k].nargs; }                   \
    EMU_EXPORT const size_t* emu_kernel_sizes(int k) { return ::emu::g_kernels[k].sizes; }         \
    EMU_EXPORT const unsigned char* emu_kernel_is_ptr(int k) { return ::emu::g_kernels[k].is_ptr; } \
    EMU_EXPORT void emu_set_block_order(int mode, unsigned long long seed) {                       \
        ::emu::g_order = mode;                                                                     \
        ::emu::g_order_seed = seed;                                                                \
    }                                                                                              \
    EMU_EXPORT int emu_launch(int k, const unsigned* grid, const unsigned* block, size_t shmem,    \
                              void** args, char* err, size_t errlen) {                             \
        return ::emu::launch(k, grid, block, shmem, args, err, errlen);                            \
    }
