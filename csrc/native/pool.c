/* A small thread pool for one forward at a time.
 *
 * Inside a forward (between rz_pool_begin and rz_pool_end) workers spin on a job counter, so the ~170 jobs
 * of a forward (a few per layer) each start within a microsecond; outside a forward they sleep on a
 * condition variable and take no CPU from the server, the draft or anything else on the machine.
 *
 * A job is a function every thread may run; it claims its work in small units from a shared counter, so a
 * thread the OS has descheduled (another program on the same cores) never holds the others up: the caller
 * does whatever no worker took, and waits only for workers already inside the job. Spinning gives way
 * (sched_yield) after a few microseconds, so a descheduled thread gets its core back quickly.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "model.h"

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif
#define SPINS 2000  /* pause loops (~100 cycles each) before yielding the core */

struct rz_pool {
    int nth;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int active;          /* 1 inside a forward: workers spin instead of sleeping */
    atomic_uint seq;            /* bumped for every job */
    atomic_uint done;           /* seq of the last job the caller has closed */
    atomic_int inflight;        /* workers inside a job's function */
    int stop;
    rz_job_fn fn;
    void *arg;
};

typedef struct { rz_pool *p; int ith; } worker_arg;

static void *worker(void *varg) {
    worker_arg wa = *(worker_arg *)varg;
    free(varg);
    rz_pool *p = wa.p;
    unsigned seen = atomic_load(&p->seq);
    for (;;) {
        int spins = 0;
        unsigned s;
        while ((s = atomic_load_explicit(&p->seq, memory_order_acquire)) == seen) {
            if (!atomic_load_explicit(&p->active, memory_order_relaxed)) {
                pthread_mutex_lock(&p->mu);
                while (!atomic_load(&p->active) && !p->stop && atomic_load(&p->seq) == seen)
                    pthread_cond_wait(&p->cv, &p->mu);
                int stop = p->stop;
                pthread_mutex_unlock(&p->mu);
                if (stop) return NULL;
                continue;
            }
            if (++spins < SPINS)
                CPU_RELAX();
            else
                sched_yield();
        }
        seen = s;
        /* Join job s only while it is still the current, open job. Once inflight counts us, the caller cannot
         * close job s and move on without waiting for us; if it closed s (or even posted and closed s + 1)
         * before that, seq or done says so and we stay out: its fn and arg may be gone. */
        atomic_fetch_add(&p->inflight, 1);
        if (atomic_load(&p->seq) == s && atomic_load(&p->done) != s) p->fn(p->arg, wa.ith, p->nth);
        atomic_fetch_sub(&p->inflight, 1);
    }
}

rz_pool *rz_pool_new(int nth) {
    rz_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nth = nth < 1 ? 1 : nth;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->th = calloc((size_t)p->nth, sizeof(pthread_t));
    for (int i = 1; i < p->nth; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->th[i], NULL, worker, wa) != 0) {
            free(wa);
            p->nth = i;  /* run with the threads we got */
            break;
        }
    }
    return p;
}

int rz_pool_threads(const rz_pool *p) { return p->nth; }

void rz_pool_begin(rz_pool *p) {
    if (p->nth == 1) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->active, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void rz_pool_end(rz_pool *p) {
    if (p->nth == 1) return;
    atomic_store(&p->active, 0);
}

void rz_pool_run(rz_pool *p, rz_job_fn fn, void *arg) {
    if (p->nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    int was_active = atomic_load(&p->active);
    if (!was_active) rz_pool_begin(p);  /* a job outside begin/end (a test's matmul) */
    p->fn = fn;
    p->arg = arg;
    unsigned s = atomic_fetch_add(&p->seq, 1) + 1;
    fn(arg, 0, p->nth);
    /* Close the job, then wait for the workers inside it. A worker that enters after the close sees it and
     * leaves (both sides use sequentially consistent operations: one of them sees the other). */
    atomic_store(&p->done, s);
    for (int spins = 0; atomic_load(&p->inflight) > 0;)
        if (++spins < SPINS)
            CPU_RELAX();
        else
            sched_yield();
    if (!was_active) rz_pool_end(p);
}

void rz_pool_free(rz_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    atomic_store(&p->active, 0);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nth; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p);
}
