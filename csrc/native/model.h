/* The transformer (Llama and Qwen2: RMSNorm, RoPE, grouped-query attention, SwiGLU) over repacked weights,
 * a KV cache per context, and the thread pool that runs one forward at a time. */
#ifndef RZ_MODEL_H
#define RZ_MODEL_H

#include "rz.h"

typedef struct rz_pool rz_pool;
typedef void (*rz_job_fn)(void *arg, int ith, int nth);
rz_pool *rz_pool_new(int nth);
int rz_pool_threads(const rz_pool *p);
void rz_pool_begin(rz_pool *p);
void rz_pool_end(rz_pool *p);
void rz_pool_run(rz_pool *p, rz_job_fn fn, void *arg);
void rz_pool_free(rz_pool *p);

/* one matmul of a parallel job: out (n x w->rows, row stride ldo) = act x w^T */
typedef struct {
    const rz_tensor *w;
    const rz_act *a;
    float *out;
    int ldo;
    const int32_t *units;               /* NULL: all groups; else n_units (first, end) group ranges, one a unit */
    int n_units;
} rz_mm;

/* run up to 4 matmuls over the same activation rows as one parallel job */
void rz_matmul(rz_pool *pool, const rz_isa *isa, const rz_mm *mm, int count);

typedef struct {
    float *attn_norm, *ffn_norm;        /* dim */
    float *bq, *bk, *bv;                /* Qwen2 biases, or NULL */
    const rz_tensor *wq, *wk, *wv, *wo, *wgate, *wup, *wdown;
} rz_layer;

typedef struct {
    int n_layer, dim, n_head, n_head_kv, head_dim, ffn, vocab;
    float eps, rope_base;
    int rope_neox;                      /* 1: rotate pairs (i, i + head_dim/2) (Qwen2); 0: pairs (2i, 2i+1) */
    const rz_tensor *tok_embd, *output; /* output may be tok_embd (tied) */
    float *out_norm;
    rz_layer *layers;
    /* a draft head (NULL in a target): its input row is mix . [rms(embd(token)); rms(g)], where g is
     * fuse . [rms(f_1); ...; rms(f_n_feat)] over n_feat hidden states of the target's row, or the head's own
     * previous output row (drafting past what the target computed); rms() has no weight (it is in the matrix) */
    const rz_tensor *fuse, *mix;
    int n_feat;
    rz_pool *pool;
    const rz_isa *isa;
} rz_model;

enum { RZ_PH_QKV, RZ_PH_ATTN, RZ_PH_ATTN_OUT, RZ_PH_GATE_UP, RZ_PH_DOWN, RZ_PH_OUTPUT, RZ_PH_QUANT, RZ_PH_OTHER,
       RZ_PHASES };
extern const char *const rz_phase_names[RZ_PHASES];

#define RZ_MAX_CAP 4 /* layers a forward can hand back */
#define RZ_MAX_SEQ 64 /* sequences in one forward (at most one a row of a pass) */
#define RZ_CHUNK 64  /* rows per pass of a long forward (prefill): scratch is sized for this */

typedef struct {
    const rz_model *m;
    int n_ctx, n_layer;                 /* n_layer <= m->n_layer: a truncated view for self-drafting */
    int kv_dim, kt_stride;
    uint16_t *kc;                       /* [layer][kv_dim][kt_stride] f16: keys transposed */
    uint16_t *vc;                       /* [layer][n_ctx][kv_dim] f16 */
    float *rope;                        /* [n_ctx][head_dim/2][2]: cos, sin */
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    float *scratch;                     /* per thread: attention scores */
    size_t scratch_stride;
    rz_act act;
    int32_t *out_units, *out_gaps;      /* a restricted output layer: group ranges computed, column ranges not */
    int n_out_units, n_out_gaps;        /* n_out_units == 0: every column */
    int n_cap, cap_layer[RZ_MAX_CAP];   /* layers whose output (residual stream) a forward can hand back */
    float *hin, *g, *ones;              /* a head's input scratch: RZ_CHUNK x (n_feat|2) * dim, RZ_CHUNK x dim */
    double phase_s[RZ_PHASES];          /* wall time per phase of the forwards so far (Context.phase_times) */
} rz_ctx;

int rz_ctx_init(rz_ctx *c, const rz_model *m, int n_ctx, int n_layer);
void rz_ctx_free(rz_ctx *c);
/* compute only the output columns of groups whose mask byte is nonzero (the rest of a logits row is -inf);
 * mask NULL: every column again. 0, or -1 when out of memory. */
int rz_ctx_set_vocab(rz_ctx *c, const uint8_t *mask);
/* hand back the output of these layers (each < n_layer - 1: the last one computes only the logits' rows) in
 * every forward with a `captured` buffer; n 0: none. 0, or -1 for a bad layer. */
int rz_ctx_set_capture(rz_ctx *c, const int *layers, int n);

/* what a forward reads and hands back beside tokens and logits (NULL fields: nothing) */
typedef struct {
    const float *feats;     /* head: n rows of n_feat * dim target hidden states */
    const float *hidden_in; /* head, where feats is NULL: n rows of dim, its own previous output */
    float *captured;        /* n rows of n_cap * dim: the capture layers' outputs, in order */
    float *hidden_out;      /* the logits' rows (n, or 1 with last_only) of the last layer's output (pre-norm) */
} rz_io;

/* forward tokens[0..n) at positions pos..pos+n-1; logits (n or 1 rows of vocab) into out */
int rz_forward(rz_ctx *c, const int32_t *tokens, int n, int pos, float *out, int last_only);
/* the same with the reads and hand-backs of io (NULL: as rz_forward); -3: a head without feats/hidden_in */
int rz_forward_io(rz_ctx *c, const int32_t *tokens, int n, int pos, float *out, int last_only, const rz_io *io);

/* one sequence's part of a batched forward: n tokens at positions pos.. of its context; logits for its last
 * out_rows rows (0..n); io's buffers as in rz_forward_io (feats / hidden_in: a head, alone in its batch) */
typedef struct {
    rz_ctx *c;
    const int32_t *tokens;
    int n, pos, out_rows;
    rz_io io;
} rz_batch_seq;

/* One forward over the rows of several sequences of one model (each in its own context, same n_layer): every
 * matmul over all rows at once, attention per sequence over its own cache. Logits rows go to out in sequence
 * order (each sequence's out_rows rows). A row's bits are those it gets forwarded alone.
 * -1 positions outside a context, -2 a token outside the vocabulary, -3 a head without features or
 * batched with others, -4 contexts of different models / layers or a bad count. */
int rz_forward_batch(const rz_batch_seq *seqs, int n_seq, float *out);

#endif
