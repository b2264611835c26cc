/* One forward of a Llama / Qwen2 transformer over repacked weights, and the parallel matmul driver.
 *
 * Long inputs go through in passes of RZ_CHUNK rows; within a pass every matmul reads each weight chunk from
 * memory once and applies it to all rows (row tiles of <= 8 reuse it from cache). Threads split output
 * columns (16-row weight groups), never the reduction, and every row's arithmetic is independent of the
 * other rows: a token's logits are the same bits whether it is forwarded alone, among others, in any pass
 * boundary, on any thread count, or after a rollback (a rollback is a position move; the cache rows past
 * it are overwritten by the next forward before anything reads them).
 */
#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* ---- parallel matmul -------------------------------------------------------------------------------- */
#ifndef WORK_BYTES
#define WORK_BYTES (48 << 10)  /* weights per work unit: stays in L2 while the row tiles reuse it */
#endif

/* Work units are split into one contiguous range per thread, taken from its front by its owner, so each
 * thread streams through memory in order (the hardware prefetcher and PF_AHEAD see one sequential stream
 * per core instead of units interleaved between threads). A thread whose range is empty takes units from
 * the back of the others' ranges, so a stalled or absent thread's share still gets done (pool workers may
 * miss a job: the caller's thread alone can finish it). Each range is {front, back} packed in one 64-bit
 * atomic, claimed by compare-and-swap. Which thread computes a unit never changes its bits. */
#define MM_RANGES 64

typedef struct {
    const rz_isa *isa;
    const rz_mm *mm;
    int count, ranges;
    int per_unit[4], units[4], first[5];
    _Atomic uint64_t range[MM_RANGES];  /* front in the low 32 bits, back (exclusive) in the high */
} mm_job;

/* take one unit from range r: its front (own range) or its back (another's); -1 if it is empty */
static int mm_take(mm_job *j, int r, int from_back) {
    uint64_t cur = atomic_load_explicit(&j->range[r], memory_order_relaxed);
    for (;;) {
        uint32_t front = (uint32_t)cur, back = (uint32_t)(cur >> 32);
        if (front >= back) return -1;
        uint64_t nxt = from_back ? ((uint64_t)(back - 1) << 32) | front : ((uint64_t)back << 32) | (front + 1);
        if (atomic_compare_exchange_weak_explicit(&j->range[r], &cur, nxt, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)(from_back ? back - 1 : front);
    }
}

static void mm_unit(const mm_job *j, int u) {
    int i = 0;
    while (u >= j->first[i + 1]) i++;
    const rz_mm *m = &j->mm[i];
    int g0, g1;
    if (m->units) {
        g0 = m->units[2 * (u - j->first[i])];
        g1 = m->units[2 * (u - j->first[i]) + 1];
    } else {
        g0 = (u - j->first[i]) * j->per_unit[i];
        g1 = g0 + j->per_unit[i];
        if (g1 > m->w->groups) g1 = m->w->groups;
    }
    rz_kernel k = rz_kernel_for(j->isa, m->w->type);
    for (int t = 0; t < m->a->tiles; t++) k(m->w, g0, g1, m->a, t, m->out, m->ldo);
}

static void mm_worker(void *varg, int ith, int nth) {
    (void)nth;
    mm_job *j = varg;
    const int own = ith % j->ranges;
    int u;
    while ((u = mm_take(j, own, 0)) >= 0) mm_unit(j, u);
    for (int d = 1; d < j->ranges; d++) {
        const int r = (own + d) % j->ranges;
        while ((u = mm_take(j, r, 1)) >= 0) mm_unit(j, u);
    }
}

/* groups per work unit of w, out of `groups` to compute */
static int unit_groups(const rz_tensor *w, int groups, int nth) {
    int per = (int)(WORK_BYTES / w->group_bytes);
    per = per < 1 ? 1 : per;
    /* at least ~4 units per thread so a stalled thread's share is picked up by the others */
    int cap = groups / (4 * nth);
    if (cap >= 1 && per > cap) per = cap;
    return per;
}

void rz_matmul(rz_pool *pool, const rz_isa *isa, const rz_mm *mm, int count) {
    mm_job j;
    memset(&j, 0, sizeof j);
    j.isa = isa;
    j.mm = mm;
    j.count = count;
    int nth = rz_pool_threads(pool);
    for (int i = 0; i < count; i++) {
        int per = unit_groups(mm[i].w, mm[i].w->groups, nth);
        j.per_unit[i] = per;
        j.units[i] = mm[i].units ? mm[i].n_units : (mm[i].w->groups + per - 1) / per;
        j.first[i + 1] = j.first[i] + j.units[i];
    }
    const int total = j.first[count];
    j.ranges = nth < MM_RANGES ? nth : MM_RANGES;
    for (int r = 0; r < j.ranges; r++) {
        uint64_t front = (uint64_t)total * r / j.ranges, back = (uint64_t)total * (r + 1) / j.ranges;
        atomic_init(&j.range[r], back << 32 | front);
    }
    rz_pool_run(pool, mm_worker, &j);
}

/* ---- context ---------------------------------------------------------------------------------------- */
static void *zalloc(size_t bytes) {
    void *p = aligned_alloc(RZ_ALIGN, (bytes + RZ_ALIGN - 1) / RZ_ALIGN * RZ_ALIGN + RZ_ALIGN);
    if (p) memset(p, 0, bytes);
    return p;
}

int rz_ctx_init(rz_ctx *c, const rz_model *m, int n_ctx, int n_layer) {
    memset(c, 0, sizeof *c);
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_layer = n_layer;
    c->kv_dim = m->n_head_kv * m->head_dim;
    c->kt_stride = (n_ctx + 63) & ~63;  /* reads run in 64-position blocks */
    c->kc = zalloc((size_t)n_layer * c->kt_stride * c->kv_dim * 2);
    c->vc = zalloc((size_t)n_layer * n_ctx * c->kv_dim * 2);
    int half = m->head_dim / 2;
    c->rope = zalloc((size_t)n_ctx * half * 2 * sizeof(float));
    size_t R = RZ_CHUNK;
    c->x = zalloc(R * m->dim * 4);
    c->xn = zalloc(R * m->dim * 4);
    c->q = zalloc(R * m->n_head * m->head_dim * 4);
    c->k = zalloc(R * c->kv_dim * 4);
    c->v = zalloc(R * c->kv_dim * 4);
    c->att = zalloc(R * m->n_head * m->head_dim * 4);
    c->tmp = zalloc(R * m->dim * 4);
    c->gate = zalloc(R * m->ffn * 4);
    c->up = zalloc(R * m->ffn * 4);
    c->scratch_stride = (size_t)4 * (((size_t)n_ctx + 63) & ~(size_t)63) + 64;  /* 4 pairs' scores */
    c->scratch = zalloc(c->scratch_stride * rz_pool_threads(m->pool) * 4);
    rz_act_init(&c->act);
    int big = m->ffn > m->dim ? m->ffn : m->dim;
    if (m->n_head * m->head_dim > big) big = m->n_head * m->head_dim;
    int head_ok = 1;
    if (m->mix) {  /* a draft head's input: fused features, then [embedding; g] */
        const int w = (m->n_feat > 2 ? m->n_feat : 2) * m->dim;
        if (w > big) big = w;
        c->hin = zalloc(R * w * 4);
        c->g = zalloc(R * m->dim * 4);
        c->ones = zalloc((size_t)m->dim * 4);
        head_ok = c->hin && c->g && c->ones;
        for (int i = 0; head_ok && i < m->dim; i++) c->ones[i] = 1.0f;
    }
    if (!c->kc || !c->vc || !c->rope || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->tmp ||
        !c->gate || !c->up || !c->scratch || !head_ok || rz_act_reserve(&c->act, RZ_CHUNK, big) != 0) {
        rz_ctx_free(c);
        return -1;
    }
    for (int p = 0; p < n_ctx; p++)
        for (int i = 0; i < half; i++) {
            double theta = (double)p * pow((double)m->rope_base, -2.0 * i / m->head_dim);
            c->rope[((size_t)p * half + i) * 2] = (float)cos(theta);
            c->rope[((size_t)p * half + i) * 2 + 1] = (float)sin(theta);
        }
    return 0;
}

void rz_ctx_free(rz_ctx *c) {
    free(c->kc);
    free(c->vc);
    free(c->rope);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->tmp);
    free(c->gate);
    free(c->up);
    free(c->scratch);
    free(c->out_units);
    free(c->out_gaps);
    free(c->hin);
    free(c->g);
    free(c->ones);
    rz_act_free(&c->act);
    memset(c, 0, sizeof *c);
}

int rz_ctx_set_vocab(rz_ctx *c, const uint8_t *mask) {
    const rz_tensor *w = c->m->output;
    const int G = w->groups, V = c->m->vocab;
    free(c->out_units);
    free(c->out_gaps);
    c->out_units = c->out_gaps = NULL;
    c->n_out_units = c->n_out_gaps = 0;
    if (!mask) return 0;
    int on = 0;
    for (int g = 0; g < G; g++) on += mask[g] != 0;
    if (on == G || on == 0) return 0;  /* none selected: a row of -inf would be no distribution; keep all */
    const int per = unit_groups(w, on, rz_pool_threads(c->m->pool));
    /* at most one unit per `per` groups plus one per run; one gap per run plus one */
    c->out_units = malloc(sizeof(int32_t) * 2 * ((size_t)G + 1));
    c->out_gaps = malloc(sizeof(int32_t) * 2 * ((size_t)G + 1));
    if (!c->out_units || !c->out_gaps) {
        rz_ctx_set_vocab(c, NULL);
        return -1;
    }
    int gap0 = 0;
    for (int g = 0; g < G;) {
        if (!mask[g]) {
            g++;
            continue;
        }
        int e = g;
        while (e < G && mask[e]) e++;
        if (g * RZ_GROUP > gap0) {
            c->out_gaps[2 * c->n_out_gaps] = gap0;
            c->out_gaps[2 * c->n_out_gaps++ + 1] = g * RZ_GROUP;
        }
        for (int s = g; s < e; s += per) {
            c->out_units[2 * c->n_out_units] = s;
            c->out_units[2 * c->n_out_units++ + 1] = s + per < e ? s + per : e;
        }
        gap0 = e * RZ_GROUP < V ? e * RZ_GROUP : V;
        g = e;
    }
    if (gap0 < V) {
        c->out_gaps[2 * c->n_out_gaps] = gap0;
        c->out_gaps[2 * c->n_out_gaps++ + 1] = V;
    }
    return 0;
}

int rz_ctx_set_capture(rz_ctx *c, const int *layers, int n) {
    if (n < 0 || n > RZ_MAX_CAP) return -1;
    for (int i = 0; i < n; i++)
        if (layers[i] < 0 || layers[i] >= c->n_layer - 1) return -1;
    for (int i = 0; i < n; i++) c->cap_layer[i] = layers[i];
    c->n_cap = n;
    return 0;
}

/* ---- the pieces --------------------------------------------------------------------------------------- */
static void rope_rows(const rz_ctx *c, float *x, int n, int n_heads, int pos0) {
    const rz_model *m = c->m;
    const int hd = m->head_dim, half = hd / 2, stride = n_heads * hd;
    for (int i = 0; i < n; i++) {
        const float *cs = c->rope + (size_t)(pos0 + i) * half * 2;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)i * stride + h * hd;
            for (int j = 0; j < half; j++) {
                int a = m->rope_neox ? j : 2 * j, b = m->rope_neox ? j + half : 2 * j + 1;
                float x0 = v[a], x1 = v[b], co = cs[2 * j], si = cs[2 * j + 1];
                v[a] = x0 * co - x1 * si;
                v[b] = x0 * si + x1 * co;
            }
        }
    }
}

/* attention for the rows of several sequences (segments), each over its own KV cache, as one parallel job */
typedef struct {
    const rz_isa *isa;
    const rz_attn *a;      /* per segment */
    const float *scratch[RZ_MAX_SEQ];
    size_t stride[RZ_MAX_SEQ];
    int n[RZ_MAX_SEQ];     /* query rows per segment */
    int first[RZ_MAX_SEQ + 1];  /* tasks before each segment */
    int nseg;
    atomic_int next;
} attn_job;

#define ATTN_ROWS 4  /* query rows a task: their (head, row) pairs share key and value loads */

static void attn_worker(void *varg, int ith, int nth) {
    (void)nth;
    attn_job *j = varg;
    const int total = j->first[j->nseg];
    for (;;) {
        int u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= total) break;
        int s = 0;
        while (u >= j->first[s + 1]) s++;
        const rz_attn *a = &j->a[s];
        const int v = u - j->first[s], nkv = a->n_head_kv;
        const int r0 = (v / nkv) * ATTN_ROWS, r1 = r0 + ATTN_ROWS < j->n[s] ? r0 + ATTN_ROWS : j->n[s];
        float *scratch = (float *)j->scratch[s] + j->stride[s] * ith;
        j->isa->attention(a, v % nkv, r0, r1, scratch);
    }
}

static void add_rows(float *x, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = x[i] + y[i];
}

static void add_bias(float *x, const float *b, int n, int width) {
    if (!b) return;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < width; j++) x[(size_t)i * width + j] = x[(size_t)i * width + j] + b[j];
}

/* ---- activation quantization (and the SwiGLU feeding it), split over the pool ------------------------- */
typedef struct {
    rz_act *a;
    const rz_isa *isa;
    int bc, per, upr, quantize;
    const float *up;   /* non-NULL: a->x := swiglu(a->x, up) on each unit's columns first */
    atomic_int next;
} quant_job;

static void quant_worker(void *varg, int ith, int nth) {
    (void)ith;
    (void)nth;
    quant_job *j = varg;
    rz_act *a = j->a;
    const int total = a->n * j->upr, nblk = a->K / j->bc;
    for (;;) {
        int u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= total) break;
        const int r = u / j->upr, b0 = (u % j->upr) * j->per, b1 = b0 + j->per < nblk ? b0 + j->per : nblk;
        if (j->up) {
            float *x = (float *)a->x + (size_t)r * a->K + (size_t)b0 * j->bc;
            j->isa->swiglu(x, j->up + (size_t)r * a->K + (size_t)b0 * j->bc, (b1 - b0) * j->bc, x);
        }
        if (j->quantize) j->isa->quant(a, j->bc, r, b0, b1);
    }
}

/* quantize a for weights w (once per format), with the SwiGLU of (a->x, up) first if up is given */
static void need_par(rz_pool *pool, const rz_isa *isa, rz_act *a, const rz_tensor *w, const float *up) {
    const int t = w->type, is_float = rz_types[t].act == RZ_ACT_F32;
    quant_job j;
    j.a = a;
    j.isa = isa;
    j.bc = rz_block_cols(t);
    j.quantize = !is_float && !(j.bc == 32 ? a->have32 : a->have256);
    j.up = up;
    if (!j.quantize && !up) return;
    j.per = 2048 / j.bc;  /* columns a unit */
    j.upr = (a->K / j.bc + j.per - 1) / j.per;
    atomic_init(&j.next, 0);
    if (a->n * j.upr > 1)
        rz_pool_run(pool, quant_worker, &j);
    else
        quant_worker(&j, 0, 1);
    if (j.quantize) *(j.bc == 32 ? &a->have32 : &a->have256) = 1;
}

#define need(a, w) need_par(m->pool, isa, (a), (w), NULL)

/* one pass of n <= RZ_CHUNK rows at positions pos.. */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

const char *const rz_phase_names[RZ_PHASES] = {"qkv", "attention", "attn_output", "gate_up", "down", "output",
                                               "quantize", "other"};

/* time since the last mark goes to phase p (~20 ns a mark) */
#define MARK(p)                                  \
    do {                                         \
        double t_ = now_s();                     \
        c->phase_s[p] += t_ - mark;              \
        mark = t_;                               \
    } while (0)

/* a head's input rows into c->x: mix . [rms(embd(token)); rms(g)], g = fuse . [rms(f_1); ...] or hidden_in */
static void head_input(rz_ctx *c, const int32_t *tokens, int n, const float *feats, const float *hidden_in) {
    const rz_model *m = c->m;
    const rz_isa *isa = m->isa;
    const int dim = m->dim;
    if (feats) {
        const int fw = m->n_feat * dim;
        for (int i = 0; i < n; i++)
            for (int f = 0; f < m->n_feat; f++)
                isa->rmsnorm(feats + (size_t)i * fw + (size_t)f * dim, c->ones, m->eps, dim,
                             c->hin + (size_t)i * fw + (size_t)f * dim);
        rz_act_set(&c->act, c->hin, n, fw);
        need(&c->act, m->fuse);
        rz_mm fu = {m->fuse, &c->act, c->g, dim};
        rz_matmul(m->pool, isa, &fu, 1);
    } else {
        memcpy(c->g, hidden_in, (size_t)n * dim * 4);
    }
    for (int i = 0; i < n; i++) {
        float *row = c->hin + (size_t)i * 2 * dim, *e = c->x + (size_t)i * dim;
        rz_dequant_row(m->tok_embd, tokens[i], e);
        isa->rmsnorm(e, c->ones, m->eps, dim, row);
        isa->rmsnorm(c->g + (size_t)i * dim, c->ones, m->eps, dim, row + dim);
    }
    rz_act_set(&c->act, c->hin, n, 2 * dim);
    need(&c->act, m->mix);
    rz_mm mx = {m->mix, &c->act, c->x, dim};
    rz_matmul(m->pool, isa, &mx, 1);
}

/* One pass over the rows of n_seg segments (at most RZ_CHUNK rows in all), each a run of one sequence's rows
 * in its own context (KV cache, capture layers, vocabulary), all contexts of one model with the same layers.
 * Scratch is w's. The logits rows (each segment's last out_rows, in segment order) go to out, contiguously.
 * Every row's arithmetic is its own: which segments share a pass never changes a row's bits. */
typedef struct {
    rz_ctx *c;
    const int32_t *tokens;
    int n, pos, out_rows;
    rz_io io;  /* row pointers at the segment's first row; feats/hidden_in only in a pass of one segment */
} rz_seg;

static void pass(rz_ctx *w, const rz_seg *seg, int n_seg, float *out) {
    const rz_model *m = w->m;
    double mark = now_s();
    rz_ctx *c = w;  /* MARK's timers */
    const rz_isa *isa = m->isa;
    const int dim = m->dim, qd = m->n_head * m->head_dim, n_layer = w->n_layer;
    int start[RZ_MAX_SEQ + 1], live[RZ_MAX_SEQ + 1];  /* row offsets of each segment: all rows; logits rows */
    start[0] = live[0] = 0;
    for (int s = 0; s < n_seg; s++) {
        start[s + 1] = start[s] + seg[s].n;
        live[s + 1] = live[s] + seg[s].out_rows;
    }
    const int n = start[n_seg], out_rows = live[n_seg];
    if (m->mix)
        head_input(w, seg[0].tokens, n, seg[0].io.feats, seg[0].io.hidden_in);
    else
        for (int s = 0; s < n_seg; s++)
            for (int i = 0; i < seg[s].n; i++)
                rz_dequant_row(m->tok_embd, seg[s].tokens[i], w->x + (size_t)(start[s] + i) * dim);
    rz_attn at[RZ_MAX_SEQ];
    for (int l = 0; l < n_layer; l++) {
        const rz_layer *L = &m->layers[l];
        for (int i = 0; i < n; i++) isa->rmsnorm(w->x + (size_t)i * dim, L->attn_norm, m->eps, dim, w->xn + (size_t)i * dim);
        rz_act_set(&w->act, w->xn, n, dim);
        need(&w->act, L->wq);
        need(&w->act, L->wk);
        need(&w->act, L->wv);
        MARK(RZ_PH_QUANT);
        const int kvd = w->kv_dim;
        rz_mm qkv[3] = {{L->wq, &w->act, w->q, qd}, {L->wk, &w->act, w->k, kvd}, {L->wv, &w->act, w->v, kvd}};
        rz_matmul(m->pool, isa, qkv, 3);
        MARK(RZ_PH_QKV);
        add_bias(w->q, L->bq, n, qd);
        add_bias(w->k, L->bk, n, kvd);
        add_bias(w->v, L->bv, n, kvd);
        /* The last layer's keys and values are cached for every row, but past them only the rows whose logits
         * are asked for matter (a prompt's last row; none in a long prompt's earlier chunks), as llama.cpp
         * prunes its outputs: each row's arithmetic is its own, so the rows kept get the same bits. */
        const int last = l == n_layer - 1;
        attn_job aj;
        aj.isa = isa;
        aj.a = at;
        aj.nseg = n_seg;
        aj.first[0] = 0;
        for (int s = 0; s < n_seg; s++) {
            rz_ctx *sc = seg[s].c;
            const int r = start[s], pos = seg[s].pos;
            rope_rows(sc, w->q + (size_t)r * qd, seg[s].n, m->n_head, pos);
            rope_rows(sc, w->k + (size_t)r * kvd, seg[s].n, m->n_head_kv, pos);
            uint16_t *kc = sc->kc + (size_t)l * sc->kt_stride * kvd, *vc = sc->vc + (size_t)l * sc->n_ctx * kvd;
            for (int i = 0; i < seg[s].n; i++)
                for (int j = 0; j < kvd; j++) {  /* key j = (kv head, d) goes to row j of the transposed cache */
                    kc[(size_t)j * sc->kt_stride + pos + i] = rz_f32_to_f16(w->k[(size_t)(r + i) * kvd + j]);
                    vc[(size_t)(pos + i) * kvd + j] = rz_f32_to_f16(w->v[(size_t)(r + i) * kvd + j]);
                }
            const int a0 = last ? seg[s].n - seg[s].out_rows : 0, nr = seg[s].n - a0;
            const int o = last ? live[s] : start[s];  /* the segment's first attention output row */
            at[s] = (rz_attn){w->q + (size_t)(r + a0) * qd, qd, pos + a0, kc, vc, sc->kt_stride, m->head_dim,
                              m->n_head, m->n_head_kv, 1.0f / sqrtf((float)m->head_dim), w->att + (size_t)o * qd};
            aj.n[s] = nr;
            aj.scratch[s] = sc->scratch;
            aj.stride[s] = sc->scratch_stride;
            aj.first[s + 1] = aj.first[s] + m->n_head_kv * ((nr + ATTN_ROWS - 1) / ATTN_ROWS);
        }
        const int nr = last ? out_rows : n;
        if (nr == 0) break;
        if (last && nr < n)  /* the logits rows to the front, in order (each moves down or stays) */
            for (int s = 0; s < n_seg; s++)
                if (seg[s].out_rows)
                    memmove(w->x + (size_t)live[s] * dim, w->x + (size_t)(start[s + 1] - seg[s].out_rows) * dim,
                            (size_t)seg[s].out_rows * dim * 4);
        atomic_init(&aj.next, 0);
        MARK(RZ_PH_OTHER);
        rz_pool_run(m->pool, attn_worker, &aj);
        MARK(RZ_PH_ATTN);
        float *x = w->x;
        rz_act_set(&w->act, w->att, nr, qd);
        need(&w->act, L->wo);
        MARK(RZ_PH_QUANT);
        rz_mm o = {L->wo, &w->act, w->tmp, dim};
        rz_matmul(m->pool, isa, &o, 1);
        MARK(RZ_PH_ATTN_OUT);
        add_rows(x, w->tmp, (size_t)nr * dim);
        for (int i = 0; i < nr; i++) isa->rmsnorm(x + (size_t)i * dim, L->ffn_norm, m->eps, dim, w->xn + (size_t)i * dim);
        rz_act_set(&w->act, w->xn, nr, dim);
        need(&w->act, L->wgate);
        need(&w->act, L->wup);
        MARK(RZ_PH_QUANT);
        rz_mm gu[2] = {{L->wgate, &w->act, w->gate, m->ffn}, {L->wup, &w->act, w->up, m->ffn}};
        rz_matmul(m->pool, isa, gu, 2);
        MARK(RZ_PH_GATE_UP);
        rz_act_set(&w->act, w->gate, nr, m->ffn);
        need_par(m->pool, isa, &w->act, L->wdown, w->up);  /* gate := silu(gate) * up, then quantized */
        MARK(RZ_PH_QUANT);
        rz_mm d = {L->wdown, &w->act, w->tmp, dim};
        rz_matmul(m->pool, isa, &d, 1);
        MARK(RZ_PH_DOWN);
        add_rows(x, w->tmp, (size_t)nr * dim);
        if (!last)  /* capture layers are below the last: every row computed */
            for (int s = 0; s < n_seg; s++) {
                const rz_ctx *sc = seg[s].c;
                if (!seg[s].io.captured) continue;
                for (int j = 0; j < sc->n_cap; j++)
                    if (sc->cap_layer[j] == l)
                        for (int i = 0; i < seg[s].n; i++)
                            memcpy(seg[s].io.captured + ((size_t)i * sc->n_cap + j) * dim,
                                   w->x + (size_t)(start[s] + i) * dim, (size_t)dim * 4);
            }
    }
    MARK(RZ_PH_OTHER);
    if (out_rows == 0) return;
    for (int s = 0; s < n_seg; s++)
        if (seg[s].io.hidden_out)
            memcpy(seg[s].io.hidden_out, w->x + (size_t)live[s] * dim, (size_t)seg[s].out_rows * dim * 4);
    for (int i = 0; i < out_rows; i++) isa->rmsnorm(w->x + (size_t)i * dim, m->out_norm, m->eps, dim, w->xn + (size_t)i * dim);
    rz_act_set(&w->act, w->xn, out_rows, dim);
    need(&w->act, m->output);
    MARK(RZ_PH_QUANT);
    /* a restricted output layer computes only its groups; segments of several contexts compute every group
     * (a group's columns are the same bits either way) and each blanks its own context's gaps */
    const int units = n_seg == 1 ? seg[0].c->n_out_units : 0;
    rz_mm lo = {m->output, &w->act, out, m->vocab, units ? seg[0].c->out_units : NULL, units};
    rz_matmul(m->pool, isa, &lo, 1);
    for (int s = 0; s < n_seg; s++) {
        const rz_ctx *sc = seg[s].c;
        for (int r = live[s]; r < live[s + 1]; r++)  /* the columns a restricted output layer skips */
            for (int i = 0; i < sc->n_out_gaps; i++)
                for (int col = sc->out_gaps[2 * i]; col < sc->out_gaps[2 * i + 1]; col++)
                    out[(size_t)r * m->vocab + col] = -INFINITY;
    }
    MARK(RZ_PH_OUTPUT);
}

int rz_forward_io(rz_ctx *c, const int32_t *tokens, int n, int pos, float *out, int last_only, const rz_io *io) {
    rz_batch_seq one = {c, tokens, n, pos, last_only ? 1 : n, io ? *io : (rz_io){0}};
    return rz_forward_batch(&one, 1, out);
}

/* Rows in passes of at most RZ_CHUNK: the sequences in order, a sequence's rows split where a pass fills. */
int rz_forward_batch(const rz_batch_seq *seqs, int n_seq, float *out) {
    if (n_seq < 1 || n_seq > RZ_MAX_SEQ) return -4;
    rz_ctx *w = seqs[0].c;
    const rz_model *m = w->m;
    for (int s = 0; s < n_seq; s++) {
        const rz_batch_seq *q = &seqs[s];
        if (q->c->m != m || q->c->n_layer != w->n_layer) return -4;
        if (q->n <= 0 || q->pos < 0 || q->pos + q->n > q->c->n_ctx || q->out_rows < 0 || q->out_rows > q->n) return -1;
        for (int i = 0; i < q->n; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= m->tok_embd->rows) return -2;
        if (m->mix && (n_seq > 1 || (!q->io.feats && !q->io.hidden_in))) return -3;
    }
    const size_t dim = (size_t)m->dim;
    rz_pool_begin(m->pool);
    int s = 0, done = 0, out_row = 0;  /* the next row: sequence s, its row done */
    while (s < n_seq) {
        rz_seg seg[RZ_MAX_SEQ];
        int k = 0, rows = 0, orows = 0;
        while (s < n_seq && rows < RZ_CHUNK) {
            const rz_batch_seq *q = &seqs[s];
            const int len = q->n - done < RZ_CHUNK - rows ? q->n - done : RZ_CHUNK - rows;
            const int first_out = q->n - q->out_rows;  /* rows >= first_out have logits */
            const int lo = done > first_out ? done : first_out, hi = done + len;
            const int keep = hi > lo ? hi - lo : 0;  /* logits rows in this piece: its last ones */
            const rz_io *io = &q->io;
            seg[k++] = (rz_seg){q->c, q->tokens + done, len, q->pos + done, keep, {
                io->feats ? io->feats + (size_t)done * m->n_feat * dim : NULL,
                io->hidden_in ? io->hidden_in + (size_t)done * dim : NULL,
                io->captured ? io->captured + (size_t)done * q->c->n_cap * dim : NULL,
                io->hidden_out && keep ? io->hidden_out + (size_t)(lo - first_out) * dim : NULL}};
            rows += len;
            orows += keep;
            done += len;
            if (done == q->n) {
                s++;
                done = 0;
            }
        }
        pass(w, seg, k, out + (size_t)out_row * m->vocab);
        out_row += orows;
    }
    rz_pool_end(m->pool);
    return 0;
}

int rz_forward(rz_ctx *c, const int32_t *tokens, int n, int pos, float *out, int last_only) {
    return rz_forward_io(c, tokens, n, pos, out, last_only, NULL);
}
