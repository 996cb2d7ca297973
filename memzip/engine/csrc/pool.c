/* A fork-join pool of worker threads for the engine's phases.
 *
 * pool_run(fn, ctx) calls fn(ctx, t, n) once on each of n threads (the caller is thread 0) and returns
 * when all have returned. Workers spin briefly between phases (a decoding step runs a few hundred
 * phases of a few microseconds each) and then sleep on a condition variable, so an idle process
 * costs nothing. Which thread computes what never changes a result: every phase writes disjoint
 * outputs, and every value is computed by the same operations whatever the split.
 */
#include "engine.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define PAUSE() _mm_pause()
/* The engine's arithmetic assumes IEEE round-to-nearest-even without flush-to-zero or
 * denormals-are-zero: every phase runs under the default MXCSR (0x1F80), whatever the caller set. */
#define ENTER_FP() unsigned saved_csr = _mm_getcsr(); _mm_setcsr(0x1F80)
#define LEAVE_FP() _mm_setcsr(saved_csr)
#else
#define PAUSE() ((void)0)
#define ENTER_FP() ((void)0)
#define LEAVE_FP() ((void)0)
#endif

#define SPINS 2000    /* pause loops before a waiting worker starts yielding its core */
#define YIELDS 20000 /* yields before it sleeps (a few ms when the machine is idle) */

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER; /* one phase at a time per process */
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static atomic_uint generation;
static atomic_int finished;
static atomic_int sleepers;
static int started;                 /* workers alive (threads - 1) */
static int wanted = 1;              /* threads a phase uses */
static task_fn current_fn;
static void *current_ctx;
static int current_n;

static unsigned first_seen[POOL_MAX_THREADS]; /* the generation current when each worker was made */

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned seen = first_seen[id];
    for (;;) {
        unsigned now;
        int spins = 0;
        while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (++spins < SPINS) {
                PAUSE();
                continue;
            }
            if (spins < SPINS + YIELDS) {
                sched_yield();
                continue;
            }
            pthread_mutex_lock(&sleep_lock);
            atomic_fetch_add(&sleepers, 1);
            while ((now = atomic_load(&generation)) == seen) pthread_cond_wait(&wake, &sleep_lock);
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&sleep_lock);
            break;
        }
        seen = now;
        if (id < current_n) {
            ENTER_FP();
            current_fn(current_ctx, id, current_n);
            LEAVE_FP();
        }
        atomic_fetch_add_explicit(&finished, 1, memory_order_release);
    }
    return NULL;
}

int pool_threads(void) { return wanted; }

int pool_set_threads(int n) {
    if (n < 1) n = 1;
    if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
    pthread_mutex_lock(&run_lock);
    while (started < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        first_seen[started + 1] = atomic_load(&generation); /* later phases are its to run */
        if (pthread_create(&t, &attr, worker, (void *)(intptr_t)(started + 1)) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        started++;
    }
    wanted = n <= started + 1 ? n : started + 1;
    pthread_mutex_unlock(&run_lock);
    return wanted;
}

void pool_run(task_fn fn, void *ctx) {
    pthread_mutex_lock(&run_lock);
    int n = wanted;
    ENTER_FP();
    if (n == 1) {
        fn(ctx, 0, 1);
        LEAVE_FP();
        pthread_mutex_unlock(&run_lock);
        return;
    }
    current_fn = fn;
    current_ctx = ctx;
    current_n = n;
    atomic_store(&finished, 0);
    pthread_mutex_lock(&sleep_lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    if (atomic_load(&sleepers)) pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    fn(ctx, 0, n);
    LEAVE_FP();
    /* every started worker reports, also those with no share (id >= n); on a busy machine a worker may
     * be waiting for a core: yield it ours rather than spin */
    for (int spins = 0; atomic_load_explicit(&finished, memory_order_acquire) < started; spins++) {
        if (spins < 2000) PAUSE();
        else sched_yield();
    }
    pthread_mutex_unlock(&run_lock);
}

void split_range(int total, int t, int n, int align, int *begin, int *end) {
    /* [begin, end) of thread t among n over [0, total), boundaries on multiples of align */
    int units = (total + align - 1) / align;
    int a = (int)((long long)units * t / n) * align, b = (int)((long long)units * (t + 1) / n) * align;
    *begin = a < total ? a : total;
    *end = b < total ? b : total;
}
