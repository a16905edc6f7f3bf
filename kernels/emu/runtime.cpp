// The emulator's runtime: fibers and their scheduler, barriers, warp exchanges, tensor-core
// instructions, the kernel registry, the launch entry point and the guarded device allocator.
// Compiled in the one translation unit that build.rs generates, before every kernel.
#include "cuda_emu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// ---- Context switch ------------------------------------------------------------------------
// kdad_emu_switch(save, load): pushes the SysV callee-saved registers, MXCSR and the x87
// control word on the current stack, stores the stack pointer to *save, then restores the
// same set from the stack `load` points into and returns there. Everything else is
// caller-saved, so this is a complete switch (about 11 ns, against ~240 ns for swapcontext,
// which makes a sigprocmask system call each time).
// kdad_emu_fiber_start is where a new fiber's first switch returns to: it calls the entry in
// r12 with the argument in rbx, both placed on the new stack by init_fiber_stack.
extern "C" void kdad_emu_switch(void** save, void* load);
extern "C" void kdad_emu_fiber_start();
asm(R"(
    .text
    .p2align 4
    .globl kdad_emu_switch
    .hidden kdad_emu_switch
    .type kdad_emu_switch, @function
kdad_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kdad_emu_switch, .-kdad_emu_switch

    .p2align 4
    .globl kdad_emu_fiber_start
    .hidden kdad_emu_fiber_start
    .type kdad_emu_fiber_start, @function
kdad_emu_fiber_start:
    movq %rbx, %rdi
    callq *%r12
    ud2
    .size kdad_emu_fiber_start, .-kdad_emu_fiber_start
)");

thread_local __attribute__((aligned(128))) unsigned char smem_raw[kMaxDynamicSmem];

namespace kdad_emu {

thread_local uint3 thread_idx;
thread_local uint3 block_idx;
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

std::vector<Kernel>& registry() {
    static std::vector<Kernel> kernels;
    return kernels;
}

namespace {

constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxWarps = kMaxThreads / 32;
constexpr size_t kStackBytes = 64 * 1024;
constexpr size_t kAltStackBytes = 64 * 1024;
constexpr unsigned kMaxPendingCopies = 64;  // per thread; more is an error, not a silent flush

size_t page_bytes() {
    static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return page;
}

enum class State : uint8_t { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    void* sp;
    uint3 tid;
    unsigned warp, lane;
    State state;
    bool fresh;           // not started yet: its stack frame is built when it first runs
    unsigned n_pending;   // queued cp.async copies
    unsigned open_group;  // group id the next cp.async joins; commit closes it
};

struct PendingCopy {
    void* dst;
    const void* src;
    unsigned bytes;
    unsigned group;
};

struct Warp {
    unsigned lanes;    // lanes that exist (fewer than 32 only in a block's last warp)
    unsigned arrived;  // lanes waiting at the warp barrier now
    unsigned gen;      // barrier generation: its parity picks the exchange buffer
    unsigned done;     // lanes that have exited
    uint32_t waiting;  // bit per waiting lane
    uint32_t exchange[2][32][kExchangeWords];
    // A·B of the warp's current mma, computed once by the first lane to resume after the
    // mma's barrier (generation mma_gen) and read by the others. One buffer is enough: no
    // lane can start computing the next product before every lane passed the next barrier.
    unsigned mma_gen;
    float mma_product[16][8];
};

// One launch, shared by the OS threads that run its blocks.
struct Launch {
    const Kernel* kernel;
    void** args;
    dim3 grid, block;
    unsigned smem_bytes;
    unsigned n_blocks;
    uint64_t shuffle_seed;
    std::atomic<unsigned> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::string error;
};

// Everything one OS thread needs to run blocks. Reused through a pool, because mapping 1024
// guarded fiber stacks costs a millisecond and launches are frequent.
struct Worker {
    char* stacks = nullptr;  // kMaxThreads slots of [guard page | kStackBytes]
    size_t stack_stride = 0;
    char* alt_stack = nullptr;
    Fiber fibers[kMaxThreads];
    Warp warps[kMaxWarps];
    PendingCopy pending[kMaxThreads][kMaxPendingCopies];
    unsigned queue[kMaxThreads];  // ring of ready fibers
    unsigned q_head = 0, q_len = 0;
    unsigned n_threads = 0, n_done = 0;
    unsigned block_arrived = 0;
    unsigned block_gen = 0;  // completed block barriers; its parity picks block_count's slot
    // Predicate counts of __syncthreads_count, double-buffered like the warp exchanges: the
    // first arrival at the next barrier may reset its slot while others still read this one.
    unsigned block_count[2] = {0, 0};
    const char* barrier_file = nullptr;
    int barrier_line = 0;
    unsigned current = 0;
    void* sched_sp = nullptr;  // the OS thread's own stack, parked while fibers run
    void* dead_sp = nullptr;   // where a finished or failed fiber's context goes to die
    bool shuffle = false;
    uint64_t rng = 0;
    uint64_t fp_control = 0;  // MXCSR and x87 control word that new fibers start with
    const Launch* launch = nullptr;
    // Read by the signal handler: plain fields of a thread-local object are safe there.
    volatile bool in_fiber = false;
    bool failed = false;
    char message[768];
    int fault_signal = 0;
    int fault_code = 0;
    void* fault_addr = nullptr;
    bool fault_write = false;
};

thread_local Worker* tls_worker = nullptr;

uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void push_ready(Worker& w, unsigned fiber) {
    w.queue[(w.q_head + w.q_len) % kMaxThreads] = fiber;
    ++w.q_len;
}

unsigned pop_ready(Worker& w) {
    if (w.shuffle) {
        w.rng = splitmix64(w.rng);
        const unsigned pick = (w.q_head + static_cast<unsigned>(w.rng % w.q_len)) % kMaxThreads;
        std::swap(w.queue[pick], w.queue[w.q_head]);
    }
    const unsigned fiber = w.queue[w.q_head];
    w.q_head = (w.q_head + 1) % kMaxThreads;
    --w.q_len;
    return fiber;
}

[[noreturn]] void report_deadlock(Worker& w);
void* init_fiber_stack(Worker& w, unsigned i);

// The calling fiber cannot go on (it waits or has exited): run the next ready fiber, or go
// back to the scheduler when the block is finished. `save` receives the caller's context.
void run_next(Worker& w, void** save) {
    if (w.q_len == 0) {
        if (w.n_done == w.n_threads) {
            w.in_fiber = false;
            kdad_emu_switch(save, w.sched_sp);
            __builtin_unreachable();
        }
        report_deadlock(w);
    }
    const unsigned next = pop_ready(w);
    if (next == w.current) return;  // shuffle mode re-picked the fiber that just yielded
    w.current = next;
    Fiber& f = w.fibers[next];
    thread_idx = f.tid;
    if (f.fresh) {
        f.fresh = false;
        f.sp = init_fiber_stack(w, next);
    }
    kdad_emu_switch(save, f.sp);
}

// After the last arrival releases a barrier it goes on running, except under shuffle, where it
// queues itself like everyone else so that the order after each barrier is random too.
void after_release(Worker& w) {
    if (!w.shuffle) return;
    push_ready(w, w.current);
    run_next(w, &w.fibers[w.current].sp);
}

Worker& worker() { return *tls_worker; }
Fiber& current_fiber() { return worker().fibers[worker().current]; }
Warp& current_warp() { return worker().warps[current_fiber().warp]; }

[[noreturn]] void report_deadlock(Worker& w) {
    unsigned at_block = 0, at_warp = 0, first_warp = 0;
    for (unsigned i = 0; i < w.n_threads; ++i) {
        if (w.fibers[i].state == State::AtBlockBarrier) ++at_block;
        if (w.fibers[i].state == State::AtWarpBarrier && at_warp++ == 0) first_warp = w.fibers[i].warp;
    }
    fail("deadlock: %u threads wait at __syncthreads (%s:%d), %u threads wait in a warp collective "
         "(the first in warp %u), %u threads have exited",
         at_block, at_block ? w.barrier_file : "-", at_block ? w.barrier_line : 0, at_warp, first_warp,
         w.n_done);
}

// Bookkeeping of a thread that returned from the kernel.
void thread_exit(Worker& w) {
    Fiber& f = w.fibers[w.current];
    Warp& warp = w.warps[f.warp];
    f.state = State::Done;
    ++w.n_done;
    ++warp.done;
    if (w.block_arrived > 0)
        fail("divergent barrier: this thread exited while %u threads wait at __syncthreads (%s:%d)",
             w.block_arrived, w.barrier_file, w.barrier_line);
    if (warp.arrived > 0)
        fail("divergent warp: this thread exited while %u lanes of its warp wait in a warp collective",
             warp.arrived);
}

// Body of every fiber. When its thread returns and the next ready thread has not started yet,
// that thread runs right here, on the finished one's stack, without a context switch: a
// kernel without barriers runs as a plain loop over its threads.
void fiber_main(Worker* w) {
    const Launch& launch = *w->launch;
    for (;;) {
        launch.kernel->thunk(launch.kernel->fn, launch.args);
        thread_exit(*w);
        if (w->q_len == 0) run_next(*w, &w->dead_sp);  // ends the block or reports a deadlock
        const unsigned next = pop_ready(*w);
        Fiber& f = w->fibers[next];
        w->current = next;
        thread_idx = f.tid;
        if (!f.fresh) {
            kdad_emu_switch(&w->dead_sp, f.sp);
            __builtin_unreachable();
        }
        f.fresh = false;
    }
}

void* init_fiber_stack(Worker& w, unsigned i) {
    // The frame kdad_emu_switch pops: FP control, r15, r14, r13, r12 (entry), rbx (argument),
    // rbp, return address. The slot top is 16-byte aligned, so rsp is too when the entry is
    // called from kdad_emu_fiber_start, as the ABI wants.
    char* top = w.stacks + (i + 1) * w.stack_stride;
    auto* frame = reinterpret_cast<uint64_t*>(top) - 8;
    frame[0] = w.fp_control;
    frame[1] = frame[2] = frame[3] = 0;
    frame[4] = reinterpret_cast<uint64_t>(&fiber_main);
    frame[5] = reinterpret_cast<uint64_t>(&w);
    frame[6] = 0;
    frame[7] = reinterpret_cast<uint64_t>(&kdad_emu_fiber_start);
    return frame;
}

uint64_t current_fp_control() {
    uint32_t mxcsr = __builtin_ia32_stmxcsr();
    uint16_t x87 = 0;
    asm volatile("fnstcw %0" : "=m"(x87));
    return uint64_t(mxcsr) | (uint64_t(x87) << 32);
}

// ---- Guarded device memory -------------------------------------------------------------------

struct Mapping {
    char* base;
    size_t len;
    char* data;
    size_t bytes;
};
std::mutex alloc_mutex;
std::map<uintptr_t, Mapping> mappings;  // by base address

std::string describe_address(const Worker& w, void* addr) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    char buf[256];
    const uintptr_t stacks = reinterpret_cast<uintptr_t>(w.stacks);
    if (a >= stacks && a < stacks + kMaxThreads * w.stack_stride && (a - stacks) % w.stack_stride < page_bytes()) {
        std::snprintf(buf, sizeof buf, "stack overflow (each emulated thread has a %zu KB stack)", kStackBytes / 1024);
        return buf;
    }
    {
        std::lock_guard<std::mutex> lock(alloc_mutex);
        auto it = mappings.upper_bound(a);
        if (it != mappings.begin()) {
            const Mapping& m = std::prev(it)->second;
            const uintptr_t data = reinterpret_cast<uintptr_t>(m.data);
            if (a >= reinterpret_cast<uintptr_t>(m.base) && a < reinterpret_cast<uintptr_t>(m.base) + m.len) {
                if (a >= data + m.bytes)
                    std::snprintf(buf, sizeof buf, "%zu bytes past the end of a %zu-byte device buffer at %p",
                                  size_t(a - data - m.bytes), m.bytes, static_cast<void*>(m.data));
                else
                    std::snprintf(buf, sizeof buf, "%zu bytes before the start of a %zu-byte device buffer at %p",
                                  size_t(data - a), m.bytes, static_cast<void*>(m.data));
                return buf;
            }
        }
    }
    if (a < 65536) return "a null pointer (plus an offset)";
    return "no device buffer there (freed memory or a wild pointer)";
}

std::string describe_fault(const Worker& w) {
    char buf[512];
    switch (w.fault_signal) {
        case SIGFPE:
            return "arithmetic exception (integer division by zero or overflow)";
        case SIGBUS:
            std::snprintf(buf, sizeof buf, "bus error at address %p", w.fault_addr);
            return buf;
        default:
            break;
    }
    if (w.fault_code == SI_KERNEL)
        return "general-protection fault: a misaligned vector access (a 16-byte type at an address "
               "that is not a multiple of 16) or a non-canonical address";
    std::snprintf(buf, sizeof buf, "out-of-bounds %s at address %p: %s", w.fault_write ? "write" : "read",
                  w.fault_addr, describe_address(w, w.fault_addr).c_str());
    return buf;
}

// ---- Faults inside kernels -----------------------------------------------------------------
// A fault while a fiber runs ends its block: the handler (on an alternate stack, so that a
// fiber's stack overflow can be handled too) records it and switches to the scheduler, which
// turns it into the launch's error. Faults anywhere else go to the handler that was there
// before (Rust's stack-overflow reporter, or the default action).

constexpr int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE};
struct sigaction previous_action[3];

void on_fault(int sig, siginfo_t* info, void* context) {
    Worker* w = tls_worker;
    if (w != nullptr && w->in_fiber) {
        w->fault_signal = sig;
        w->fault_code = info->si_code;
        w->fault_addr = info->si_addr;
        // Bit 1 of the x86 page-fault error code is set for writes.
        w->fault_write = sig == SIGSEGV && (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2);
        w->in_fiber = false;
        w->failed = true;
        kdad_emu_switch(&w->dead_sp, w->sched_sp);
    }
    for (int i = 0; i < 3; ++i) {
        if (kFaultSignals[i] != sig) continue;
        const struct sigaction& old = previous_action[i];
        if (old.sa_flags & SA_SIGINFO) {
            old.sa_sigaction(sig, info, context);
        } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
            old.sa_handler(sig);
        } else {
            // Returning re-executes the faulting instruction under the default action.
            signal(sig, SIG_DFL);
        }
    }
}

void install_fault_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        for (int i = 0; i < 3; ++i) {
            struct sigaction action = {};
            action.sa_sigaction = on_fault;
            action.sa_flags = SA_SIGINFO | SA_ONSTACK;
            sigemptyset(&action.sa_mask);
            sigaction(kFaultSignals[i], &action, &previous_action[i]);
        }
    });
}

// ---- Workers and blocks ----------------------------------------------------------------------

std::mutex pool_mutex;
std::vector<Worker*> worker_pool;

Worker* new_worker() {
    auto* w = new Worker();
    const size_t page = page_bytes();
    w->stack_stride = kStackBytes + page;
    const size_t len = kMaxThreads * w->stack_stride;
    void* stacks = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void* alt = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stacks == MAP_FAILED || alt == MAP_FAILED) {
        std::fprintf(stderr, "kdad emulator: cannot map fiber stacks (%zu MB)\n", len >> 20);
        std::abort();
    }
    w->stacks = static_cast<char*>(stacks);
    w->alt_stack = static_cast<char*>(alt);
    for (unsigned i = 0; i < kMaxThreads; ++i) mprotect(w->stacks + i * w->stack_stride, page, PROT_NONE);
    return w;
}

Worker* acquire_worker() {
    {
        std::lock_guard<std::mutex> lock(pool_mutex);
        if (!worker_pool.empty()) {
            Worker* w = worker_pool.back();
            worker_pool.pop_back();
            return w;
        }
    }
    return new_worker();
}

void release_worker(Worker* w) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    worker_pool.push_back(w);
}

// Runs one block to the end; false (with w.message set) if it failed.
bool run_block(Worker& w, const Launch& launch, unsigned b) {
    const dim3 g = launch.grid, bd = launch.block;
    block_idx = {b % g.x, (b / g.x) % g.y, b / (g.x * g.y)};
    const unsigned n = bd.x * bd.y * bd.z;
    w.n_threads = n;
    w.n_done = 0;
    w.block_arrived = 0;
    w.block_gen = 0;
    w.q_head = 0;
    w.q_len = 0;
    w.failed = false;
    w.fault_signal = 0;
    w.shuffle = launch.shuffle_seed != 0;
    w.rng = splitmix64(launch.shuffle_seed ^ splitmix64(b));
    for (unsigned i = 0; i < (n + 31) / 32; ++i) {
        Warp& warp = w.warps[i];
        warp.lanes = n - 32 * i < 32 ? n - 32 * i : 32;
        warp.arrived = warp.gen = warp.done = warp.waiting = warp.mma_gen = 0;
    }
    w.fp_control = current_fp_control();
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        f.tid = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
        f.warp = i / 32;
        f.lane = i % 32;
        f.state = State::Ready;
        f.n_pending = 0;
        f.open_group = 0;
        f.fresh = true;
        push_ready(w, i);
    }
    std::memset(smem_raw, 0xff, launch.smem_bytes);

    w.current = pop_ready(w);
    Fiber& first = w.fibers[w.current];
    thread_idx = first.tid;
    first.fresh = false;
    first.sp = init_fiber_stack(w, w.current);
    w.in_fiber = true;
    kdad_emu_switch(&w.sched_sp, first.sp);
    w.in_fiber = false;

    if (w.fault_signal != 0) {
        // The handler left without returning, so the kernel still blocks the signal.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, w.fault_signal);
        pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
        std::snprintf(w.message, sizeof w.message, "%s", describe_fault(w).c_str());
    }
    return !w.failed;
}

void run_blocks(Launch& launch) {
    Worker* w = acquire_worker();
    // Fault handling needs an alternate signal stack; Rust threads have one, others get ours.
    stack_t current;
    sigaltstack(nullptr, &current);
    const bool own_alt_stack = (current.ss_flags & SS_DISABLE) != 0;
    if (own_alt_stack) {
        stack_t alt = {};
        alt.ss_sp = w->alt_stack;
        alt.ss_size = kAltStackBytes;
        sigaltstack(&alt, nullptr);
    }
    tls_worker = w;
    w->launch = &launch;
    block_dim = launch.block;
    grid_dim = launch.grid;
    while (!launch.failed.load(std::memory_order_relaxed)) {
        const unsigned b = launch.next_block.fetch_add(1);
        if (b >= launch.n_blocks) break;
        if (!run_block(*w, launch, b)) {
            std::lock_guard<std::mutex> lock(launch.error_mutex);
            if (!launch.failed.exchange(true)) {
                char where[160];
                std::snprintf(where, sizeof where, "kernel '%s', block (%u,%u,%u), thread (%u,%u,%u): ",
                              launch.kernel->name, block_idx.x, block_idx.y, block_idx.z, thread_idx.x,
                              thread_idx.y, thread_idx.z);
                launch.error = std::string(where) + w->message;
            }
        }
    }
    tls_worker = nullptr;
    if (own_alt_stack) {
        stack_t off = {};
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, nullptr);
    }
    release_worker(w);
}

std::atomic<unsigned> configured_threads{0};
std::atomic<bool> shuffle_seed_set{false};
std::atomic<unsigned long long> shuffle_seed_value{0};

uint64_t shuffle_seed() {
    if (shuffle_seed_set.load()) return shuffle_seed_value.load();
    static const uint64_t from_env = [] {
        const char* s = std::getenv("KDAD_EMU_SHUFFLE");
        return s ? std::strtoull(s, nullptr, 0) : 0ull;
    }();
    return from_env;
}

int launch_error(char* err, size_t err_len, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int launch_error(char* err, size_t err_len, const char* fmt, ...) {
    if (err != nullptr && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return 1;
}

}  // namespace

// ---- Device-side entry points (declared in cuda_emu.h) -------------------------------------

void fail(const char* fmt, ...) {
    Worker* w = tls_worker;
    va_list ap;
    va_start(ap, fmt);
    if (w == nullptr || !w->in_fiber) {
        // Device code called outside a launch: nothing can carry the error back.
        std::fprintf(stderr, "kdad emulator: ");
        std::vfprintf(stderr, fmt, ap);
        va_end(ap);
        std::fprintf(stderr, " (outside a kernel launch)\n");
        std::abort();
    }
    std::vsnprintf(w->message, sizeof w->message, fmt, ap);
    va_end(ap);
    w->failed = true;
    w->in_fiber = false;
    kdad_emu_switch(&w->dead_sp, w->sched_sp);
    __builtin_unreachable();
}

void sync_block(const char* file, int line) {
    Worker& w = worker();
    if (w.n_done > 0)
        fail("divergent barrier: __syncthreads at %s:%d is reached after %u threads of the block exited", file, line,
             w.n_done);
    if (w.block_arrived == 0) {
        w.barrier_file = file;
        w.barrier_line = line;
    } else if (line != w.barrier_line || std::strcmp(file, w.barrier_file) != 0) {
        fail("divergent barrier: threads wait at two different __syncthreads, %s:%d and %s:%d", w.barrier_file,
             w.barrier_line, file, line);
    }
    if (++w.block_arrived == w.n_threads) {
        w.block_arrived = 0;
        ++w.block_gen;
        for (unsigned i = 0; i < w.n_threads; ++i) {
            if (w.fibers[i].state == State::AtBlockBarrier) {
                w.fibers[i].state = State::Ready;
                push_ready(w, i);
            }
        }
        after_release(w);
        return;
    }
    Fiber& f = current_fiber();
    f.state = State::AtBlockBarrier;
    run_next(w, &f.sp);
}

int sync_block_count(int predicate, const char* file, int line) {
    Worker& w = worker();
    const unsigned slot = w.block_gen & 1;
    if (w.block_arrived == 0) w.block_count[slot] = 0;
    w.block_count[slot] += predicate != 0;
    sync_block(file, line);
    return static_cast<int>(w.block_count[slot]);
}

void sync_warp() {
    Worker& w = worker();
    Fiber& f = current_fiber();
    Warp& warp = w.warps[f.warp];
    if (warp.done > 0) fail("divergent warp: a warp collective after %u lanes of the warp exited", warp.done);
    if (++warp.arrived == warp.lanes) {
        warp.arrived = 0;
        ++warp.gen;
        for (uint32_t bits = warp.waiting; bits != 0; bits &= bits - 1) {
            Fiber& other = w.fibers[f.warp * 32 + static_cast<unsigned>(__builtin_ctz(bits))];
            other.state = State::Ready;
            push_ready(w, f.warp * 32 + static_cast<unsigned>(__builtin_ctz(bits)));
        }
        warp.waiting = 0;
        after_release(w);
        return;
    }
    f.state = State::AtWarpBarrier;
    warp.waiting |= 1u << f.lane;
    run_next(w, &f.sp);
}

unsigned lane_id() { return current_fiber().lane; }
unsigned warp_lane_count() { return current_warp().lanes; }

uint32_t* exchange_begin(unsigned mask, const char* what) {
    Warp& warp = current_warp();
    const unsigned existing = warp.lanes == 32 ? 0xffffffffu : (1u << warp.lanes) - 1u;
    if ((mask & existing) != existing)
        fail("%s with mask 0x%08x, which leaves out lanes of the warp: only full-mask collectives are emulated",
             what, mask);
    return &warp.exchange[warp.gen & 1][0][0];
}

void check_source_lane(unsigned lane, const char* what) {
    const unsigned lanes = current_warp().lanes;
    if (lane >= lanes) fail("%s reads lane %u, which does not exist in this partial warp of %u lanes", what, lane, lanes);
}

void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    uint32_t* ex = exchange_begin(0xffffffffu, "mma.sync.m16n8k16");
    if (warp_lane_count() != 32) fail("mma.sync in a partial warp of %u lanes", warp_lane_count());
    const unsigned lane = lane_id();
    uint32_t* mine = ex + lane * kExchangeWords;
    std::memcpy(mine, a, 16);
    std::memcpy(mine + 4, b, 8);
    sync_warp();
    // PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16: groupID g = lane / 4,
    // threadID_in_group t = lane % 4. A (16x16, row): register i of lane (g, t) holds row
    // g + 8 (i % 2), columns 2t + 8 (i / 2) and the next. B (16x8, col): register i holds
    // rows 2t + 8 i and the next, column g. Lower index in the low half of each register.
    // C/D (16x8): element i of lane (g, t) is row g + 8 (i / 2), column 2t + i % 2.
    Warp& warp = current_warp();
    if (warp.mma_gen != warp.gen) {
        warp.mma_gen = warp.gen;
        float a_mat[16][16], b_by_col[8][16];
        auto lo = [](uint32_t w) { return bf16_bits_to_f32(static_cast<uint16_t>(w)); };
        auto hi = [](uint32_t w) { return bf16_bits_to_f32(static_cast<uint16_t>(w >> 16)); };
        for (unsigned l = 0; l < 32; ++l) {
            const unsigned g = l / 4, t = l % 4;
            const uint32_t* regs = ex + l * kExchangeWords;
            for (unsigned i = 0; i < 4; ++i) {
                const unsigned r = g + 8 * (i % 2), k = 2 * t + 8 * (i / 2);
                a_mat[r][k] = lo(regs[i]);
                a_mat[r][k + 1] = hi(regs[i]);
            }
            for (unsigned i = 0; i < 2; ++i) {
                const unsigned k = 2 * t + 8 * i;
                b_by_col[g][k] = lo(regs[4 + i]);
                b_by_col[g][k + 1] = hi(regs[4 + i]);
            }
        }
        // Products of two bf16 values are exact in f32; the hardware's summation order is
        // unspecified, this one adds them in k order and the accumulator last.
        for (unsigned r = 0; r < 16; ++r) {
            for (unsigned n = 0; n < 8; ++n) {
                float sum = 0.0f;
                for (unsigned k = 0; k < 16; ++k) sum += a_mat[r][k] * b_by_col[n][k];
                warp.mma_product[r][n] = sum;
            }
        }
    }
    const unsigned g = lane / 4, t = lane % 4;
    for (unsigned i = 0; i < 4; ++i) d[i] = c[i] + warp.mma_product[g + 8 * (i / 2)][2 * t + i % 2];
}

void ldmatrix(uint32_t* r, const void* row_ptr, unsigned count, bool trans) {
    uint32_t* ex = exchange_begin(0xffffffffu, "ldmatrix");
    if (warp_lane_count() != 32) fail("ldmatrix in a partial warp of %u lanes", warp_lane_count());
    const unsigned lane = lane_id();
    // Lanes 8i..8i+7 give the row addresses of matrix i; each row is 16 bytes, 16-aligned.
    if (lane < 8 * count && (reinterpret_cast<uintptr_t>(row_ptr) & 15) != 0)
        fail("ldmatrix: row address %p is not 16-byte aligned", row_ptr);
    std::memcpy(ex + lane * kExchangeWords, &row_ptr, sizeof row_ptr);
    sync_warp();
    auto row = [&](unsigned matrix, unsigned row_in_matrix) {
        const unsigned char* p;
        std::memcpy(&p, ex + (8 * matrix + row_in_matrix) * kExchangeWords, sizeof p);
        return p;
    };
    for (unsigned i = 0; i < count; ++i) {
        if (!trans) {
            // Lane l gets row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1.
            std::memcpy(&r[i], row(i, lane / 4) + 4 * (lane % 4), 4);
        } else {
            // Transposed: row 2 (l % 4) and the next one, both at column l / 4.
            uint16_t lo, hi;
            std::memcpy(&lo, row(i, 2 * (lane % 4)) + 2 * (lane / 4), 2);
            std::memcpy(&hi, row(i, 2 * (lane % 4) + 1) + 2 * (lane / 4), 2);
            r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
        }
    }
}

void cp_async_16(void* smem, const void* gmem, unsigned src_bytes) {
    if ((reinterpret_cast<uintptr_t>(smem) | reinterpret_cast<uintptr_t>(gmem)) & 15)
        fail("cp.async of 16 bytes with a misaligned address (shared %p, global %p)", smem, gmem);
    if (src_bytes > 16) fail("cp.async: source size %u is more than 16 bytes", src_bytes);
    Worker& w = worker();
    Fiber& f = current_fiber();
    if (f.n_pending == kMaxPendingCopies)
        fail("more than %u cp.async copies pending in one thread (missing cp_async_wait?)", kMaxPendingCopies);
    w.pending[w.current][f.n_pending++] = PendingCopy{smem, gmem, src_bytes, f.open_group};
}

void cp_async_commit() { ++current_fiber().open_group; }

void cp_async_wait(unsigned newest_pending) {
    Worker& w = worker();
    Fiber& f = current_fiber();
    PendingCopy* queue = w.pending[w.current];
    // Committed groups are those below open_group; the newest `newest_pending` may stay.
    const unsigned done_below = f.open_group > newest_pending ? f.open_group - newest_pending : 0;
    unsigned kept = 0;
    for (unsigned i = 0; i < f.n_pending; ++i) {
        const PendingCopy& c = queue[i];
        if (c.group < done_below) {
            std::memcpy(c.dst, c.src, c.bytes);
            std::memset(static_cast<char*>(c.dst) + c.bytes, 0, 16 - c.bytes);
        } else {
            queue[kept++] = c;
        }
    }
    f.n_pending = kept;
}

}  // namespace kdad_emu

// ---- C ABI for Rust --------------------------------------------------------------------------

using kdad_emu::Launch;

extern "C" int kdad_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned smem_bytes, void** args, unsigned n_args, char* err,
                               size_t err_len) {
    using namespace kdad_emu;
    if (name == nullptr) return launch_error(err, err_len, "kdad_emu_launch: kernel name is null");
    const Kernel* kernel = nullptr;
    for (const Kernel& k : registry())
        if (std::strcmp(k.name, name) == 0) kernel = &k;
    if (kernel == nullptr)
        return launch_error(err, err_len, "unknown kernel '%s' (%zu kernels are compiled into the emulator)", name,
                            registry().size());
    if (n_args != kernel->n_args)
        return launch_error(err, err_len, "kernel '%s' takes %u arguments, the launch passes %u", name,
                            kernel->n_args, n_args);
    if (n_args > 0 && args == nullptr)
        return launch_error(err, err_len, "kernel '%s': argument array is null", name);
    const uint64_t threads = uint64_t(bx) * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || threads > kMaxThreads || bz > 64)
        return launch_error(err, err_len,
                            "kernel '%s': block (%u,%u,%u) is invalid (each dimension at least 1, z at most 64, "
                            "at most %u threads)",
                            name, bx, by, bz, kMaxThreads);
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || uint64_t(gx) * gy * gz > 0xffffffffull)
        return launch_error(err, err_len, "kernel '%s': grid (%u,%u,%u) is invalid", name, gx, gy, gz);
    if (smem_bytes > kMaxDynamicSmem)
        return launch_error(err, err_len,
                            "kernel '%s': %u bytes of dynamic shared memory requested, at most %u are available",
                            name, smem_bytes, kMaxDynamicSmem);

    install_fault_handlers();
    Launch launch;
    launch.kernel = kernel;
    launch.args = args;
    launch.grid = dim3(gx, gy, gz);
    launch.block = dim3(bx, by, bz);
    launch.smem_bytes = smem_bytes;
    launch.n_blocks = gx * gy * gz;
    launch.shuffle_seed = shuffle_seed();
    unsigned n_workers = configured_threads.load();
    if (n_workers == 0) n_workers = std::max(1u, std::thread::hardware_concurrency());
    n_workers = std::min(n_workers, launch.n_blocks);
    // The calling thread runs blocks too, so a one-block launch starts no thread.
    std::vector<std::thread> helpers;
    for (unsigned i = 1; i < n_workers; ++i) helpers.emplace_back(run_blocks, std::ref(launch));
    run_blocks(launch);
    for (std::thread& t : helpers) t.join();
    if (launch.failed.load()) return launch_error(err, err_len, "%s", launch.error.c_str());
    return 0;
}

extern "C" void* kdad_emu_alloc(size_t bytes) {
    using namespace kdad_emu;
    // The data ends exactly where the trailing guard page begins, so the first byte past the
    // end faults. Its start is therefore aligned only to the largest power of two dividing
    // `bytes` (like an array of that element size), not to 256 bytes as cudaMalloc's.
    const size_t page = page_bytes();
    if (bytes > (size_t(1) << 48)) return nullptr;  // more than any address space; also no overflow below
    const size_t data_pages = (bytes + page - 1) / page * page;
    const size_t len = data_pages + 2 * page;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    char* base = static_cast<char*>(p);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + data_pages, page, PROT_NONE);
    char* data = base + page + data_pages - bytes;
    std::lock_guard<std::mutex> lock(alloc_mutex);
    mappings[reinterpret_cast<uintptr_t>(base)] = Mapping{base, len, data, bytes};
    return data;
}

extern "C" void kdad_emu_free(void* ptr) {
    using namespace kdad_emu;
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(alloc_mutex);
    auto it = mappings.upper_bound(reinterpret_cast<uintptr_t>(ptr));
    if (it == mappings.begin() || std::prev(it)->second.data != ptr) {
        std::fprintf(stderr, "kdad_emu_free: %p was not returned by kdad_emu_alloc; ignored\n", ptr);
        return;
    }
    --it;
    munmap(it->second.base, it->second.len);
    mappings.erase(it);
}

extern "C" int kdad_emu_kernel_count(void) { return static_cast<int>(kdad_emu::registry().size()); }

extern "C" const char* kdad_emu_kernel_name(int i) {
    const auto& kernels = kdad_emu::registry();
    return i >= 0 && static_cast<size_t>(i) < kernels.size() ? kernels[static_cast<size_t>(i)].name : nullptr;
}

extern "C" void kdad_emu_set_threads(unsigned n) { kdad_emu::configured_threads.store(n); }

extern "C" void kdad_emu_set_shuffle_seed(unsigned long long seed) {
    kdad_emu::shuffle_seed_value.store(seed);
    kdad_emu::shuffle_seed_set.store(true);
}
